"""Analytics pages: the home ("is it working?"), the analytics pages, their CSVs and the calculator.

Every page is for members of the workspace (owner, marketer, viewer) and platform staff acting in a
workspace; anything else answers 404 (a visitor is sent to log in). Viewers see everything read-only;
only owners and marketers may save the calculator's inputs.
"""

from __future__ import annotations

import csv

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from referral_platform.money import currency_exponent
from referral_platform.tenancy import views as tenancy_views
from referral_platform.tenancy.models import Role

from . import selectors as s
from .apis import CSV_COLUMNS
from .figures import PAGES, Figure, page_figures, table
from .forms import EconomicsSettingsForm
from .imports import MAX_ROWS, REQUIRED_COLUMNS, read_other_customers_csv
from .models import OtherChannelCustomer
from .services import economics_settings_save, other_channel_customers_import

ANALYTICS_ROLES = frozenset({Role.OWNER, Role.MARKETER, Role.VIEWER})
EDIT_ROLES = frozenset({Role.OWNER, Role.MARKETER})


def _can_read(actor) -> bool:
    if actor is None or actor.tenant is None:
        return False
    return actor.is_platform_staff or (actor.kind == "member" and actor.role in ANALYTICS_ROLES)


def _can_edit(actor) -> bool:
    return actor.is_platform_staff or (actor.kind == "member" and actor.role in EDIT_ROLES)


def _tenant(request):
    if not request.user.is_authenticated:
        return None
    actor = getattr(request, "actor", None)
    if not _can_read(actor):
        raise Http404("No workspace")
    return actor.tenant


def _chart_payload(figures: list[Figure]) -> dict:
    return {figure.slug: figure.chart for figure in figures if figure.chart}


def home_context(request, tenant) -> dict:
    """What the home include (templates/analytics/_home.html) needs; also used by the admin index."""
    filters = s.filters_from_query(tenant, request.GET)
    figures = page_figures("overview", tenant, filters)
    by_slug = {figure.slug: figure for figure in figures}
    return {
        "filters": filters,
        "figures": figures,
        "tiles": by_slug["kpis"].tiles,
        "series_slug": figures[1].slug,
        "by_slug": by_slug,
        "tables": {figure.slug: table(figure) for figure in figures},
        "charts": _chart_payload(figures),
        "waiting": by_slug["waiting"].rows,
        "programs": s.programs_of(tenant),
        "periods": list(s.PERIODS),
        "pages": PAGES,
        "tenant": tenant,
        "is_empty": all(not tile.value and not tile.previous for tile, _ in by_slug["kpis"].tiles),
    }


def home(request):
    """The first page after log-in: the marketer's home; anyone else gets the workspace home."""
    actor = getattr(request, "actor", None)
    if not request.user.is_authenticated or not _can_read(actor) or actor.kind == "partner_user":
        return tenancy_views.home(request)
    tenant = actor.tenant
    return render(request, "analytics/home.html", {**home_context(request, tenant), "actor": actor})


def page(request, slug: str):
    tenant = _tenant(request)
    if tenant is None:
        return redirect_to_login(request.get_full_path())
    filters = s.filters_from_query(tenant, request.GET)
    figures = page_figures(slug, tenant, filters, request.GET)
    context = {
        "page_slug": slug,
        "page_title": "Compare" if slug == "compare" else PAGES[slug].title,
        "filters": filters,
        "figures": [(figure, table(figure)) for figure in figures],
        "charts": _chart_payload(figures),
        "programs": s.programs_of(tenant),
        "versions": s.rule_versions_of(tenant) if slug == "compare" else [],
        "periods": list(s.PERIODS),
        "pages": PAGES,
        "tenant": tenant,
        "query": request.GET.urlencode(),
        "csv_url": reverse(f"analytics_{slug}_csv"),
        "kinds": [
            ("", "All participants"),
            ("customer", "Customers"),
            ("partner", "Partners"),
            ("employee", "Employees"),
        ],
        "channels": s._channels(),
    }
    return render(request, "analytics/page.html", context)


def figure_csv(request, slug: str):
    """One figure of a page as CSV (``?figure=<slug>`` plus the page's filters): the same cells the page
    shows, "—" where a figure is undefined. The first line names the workspace and the filters."""
    tenant = _tenant(request)
    if tenant is None:
        return redirect_to_login(request.get_full_path())
    filters = s.filters_from_query(tenant, request.GET)
    wanted = request.GET.get("figure") or ""
    figures = page_figures(slug, tenant, filters, request.GET, only=wanted or None)
    wanted = wanted or (figures[0].slug if figures else "")
    figure = next((figure for figure in figures if figure.slug == wanted), None)
    if figure is None:
        raise Http404("No such figure")
    head, body = table(figure)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d")
    response["Content-Disposition"] = f'attachment; filename="{slug}-{figure.slug}-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(
        ["# workspace", tenant.name, "from", filters.start, "to", filters.end, "currency", filters.currency]
    )
    writer.writerow(head)
    writer.writerows(body)
    return response


def calculator(request):
    """LTV:CAC calculator: the tenant's inputs (saved by owners and marketers) and what-if values."""
    tenant = _tenant(request)
    if tenant is None:
        return redirect_to_login(request.get_full_path())
    actor = request.actor
    settings = s.economics_settings(tenant)
    can_edit = _can_edit(actor)
    if request.method == "POST":
        if not can_edit:
            return HttpResponseForbidden("Viewers cannot change the economics inputs.")
        form = EconomicsSettingsForm(request.POST, instance=settings)
        if form.is_valid():
            economics_settings_save(tenant=tenant, actor=actor, values=form.cleaned_data)
            messages.success(request, "Economics inputs saved.")
            return redirect("analytics_calculator")
    else:
        form = EconomicsSettingsForm(instance=settings)
    filters = s.filters_from_query(tenant, request.GET)
    figures = s.economics(tenant, filters, settings)
    scale = 10 ** currency_exponent(filters.currency)
    arr = figures["average_arr_minor"]
    what_if = {
        "arr": None if arr is None else round(arr / scale, 2),
        "lifetime": settings.average_lifetime_months,
        "spend": settings.yearly_sales_marketing_spend_minor / scale,
        "customers": figures["customers_per_year"],
    }
    context = {
        "form": form,
        "can_edit": can_edit,
        "filters": filters,
        "tables": [(figure, table(figure)) for figure in page_figures("economics", tenant, filters)],
        "what_if": what_if,
        "currency": filters.currency,
        "pages": PAGES,
        "tenant": tenant,
        "page_slug": "calculator",
    }
    return render(request, "analytics/calculator.html", context, status=400 if form.errors else 200)


def other_customers(request):
    """Upload the other-channel customers CSV (the rows the other-customers API accepts) from the browser.

    Every row is validated first; a file with any bad row writes nothing and the page lists each problem
    with its line, external id and field. Owners and marketers upload; viewers see the page (the columns
    and the latest rows) read-only. Rows are upserted by external id within the session's workspace only.
    """
    tenant = _tenant(request)
    if tenant is None:
        return redirect_to_login(request.get_full_path())
    actor = request.actor
    can_edit = _can_edit(actor)
    errors, status = [], 200
    if request.method == "POST":
        if not can_edit:
            return HttpResponseForbidden("Viewers cannot import customers.")
        upload = request.FILES.get("file")
        if upload is None:
            errors, status = [{"line": 1, "external_id": "", "field": "file", "message": "Choose a CSV file."}], 400
        else:
            rows, problems = read_other_customers_csv(upload.read())
            if problems:
                errors, status = [vars(problem) for problem in problems], 400
            else:
                saved = other_channel_customers_import(tenant=tenant, actor=actor, rows=rows, filename=upload.name)
                noun = "customer" if saved == 1 else "customers"
                messages.success(request, f"{saved} {noun} imported from {upload.name}.")
                return redirect("analytics_other_customers")
    latest = OtherChannelCustomer.objects.for_tenant(tenant).order_by("-created_at", "-pk")[:20]
    context = {
        "tenant": tenant,
        "can_edit": can_edit,
        "errors": errors,
        "latest": latest,
        "count": OtherChannelCustomer.objects.for_tenant(tenant).count(),
        "required": REQUIRED_COLUMNS,
        "optional": [name for name in CSV_COLUMNS if name not in REQUIRED_COLUMNS],
        "max_rows": MAX_ROWS,
        "pages": PAGES,
        "page_slug": "other_customers",
    }
    return render(request, "analytics/other_customers.html", context, status=status)
