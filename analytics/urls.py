"""Analytics pages (included by referral_platform/urls.py): one URL per page and per page's CSV, so each
has its own isolation case (tests/isolation.py)."""

from django.urls import path

from . import views
from .figures import PAGES

urlpatterns = [
    path("analytics/calculator/", views.calculator, name="analytics_calculator"),
    path("analytics/other-customers/", views.other_customers, name="analytics_other_customers"),
]
for _slug in [*PAGES, "compare"]:
    urlpatterns += [
        path(f"analytics/{_slug}/", views.page, {"slug": _slug}, name=f"analytics_{_slug}"),
        path(f"analytics/{_slug}.csv", views.figure_csv, {"slug": _slug}, name=f"analytics_{_slug}_csv"),
    ]
