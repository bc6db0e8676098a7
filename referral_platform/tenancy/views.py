"""Workspace pages: home, tenant switcher, members and invitations."""

from __future__ import annotations

from allauth.account.views import LoginView as AllauthLoginView
from allauth.account.views import SignupView as AllauthSignupView
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponseForbidden
from django.shortcuts import redirect, render, resolve_url
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from .actors import SESSION_TENANT_KEY
from .forms import PENDING_INVITATION_SESSION_KEY, InvitationForm
from .models import Invitation, Membership, Role
from .services import invitation_accept, invitation_create, invitation_for_token


def home(request):
    if not request.user.is_authenticated:
        return render(request, "home_public.html")
    if request.actor.kind == "partner_user":
        return redirect("portal_home")
    return render(request, "home.html", {"actor": request.actor})


def safe_next(request, target: str | None, *, default: str) -> str:
    """``target`` when it is a URL of this site (Django's url_has_allowed_host_and_scheme), else ``default``:
    never an off-site redirect (``//evil.example``), never a 500 on a bare word (``foo``)."""
    if (
        target
        and target.startswith("/")
        and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
    ):
        return target
    return resolve_url(default)


@login_required
@require_POST
def tenant_switch(request, slug: str):
    membership = next((m for m in request.actor.memberships if m.tenant.slug == slug), None)
    if membership is None:
        raise Http404("No such workspace")
    request.session[SESSION_TENANT_KEY] = membership.tenant_id
    messages.success(request, f"Switched to {membership.tenant.name}.")
    return redirect(safe_next(request, request.POST.get("next"), default="home"))


@login_required
def workspace_members(request):
    actor = request.actor
    if actor.tenant is None or actor.kind not in ("member", "platform_staff"):
        raise Http404("No workspace")
    is_owner = actor.role == Role.OWNER
    form = InvitationForm(request.POST or None)
    if request.method == "POST":
        if not is_owner:
            return HttpResponseForbidden("Only owners can invite members.")
        if form.is_valid():
            try:
                invitation_create(
                    tenant=actor.tenant, email=form.cleaned_data["email"], role=form.cleaned_data["role"], actor=actor
                )
            except ValidationError as error:
                for field, errors in error.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
                return redirect("workspace_members")
    context = {
        "members": Membership.objects.for_tenant(actor.tenant).select_related("user"),
        "invitations": Invitation.objects.for_tenant(actor.tenant).filter(accepted_at__isnull=True),
        "form": form,
        "is_owner": is_owner,
    }
    return render(request, "workspace/members.html", context, status=400 if form.errors else 200)


def invitation_accept_view(request, token: str):
    invitation = invitation_for_token(token=token)
    if invitation is None or not invitation.is_pending:
        return render(request, "workspace/invitation_invalid.html", status=404)
    if not request.user.is_authenticated:
        request.session[PENDING_INVITATION_SESSION_KEY] = token
        return render(request, "workspace/invitation.html", {"invitation": invitation})
    if request.method == "POST":
        try:
            membership = invitation_accept(token=token, user=request.user)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return render(request, "workspace/invitation.html", {"invitation": invitation}, status=400)
        request.session.pop(PENDING_INVITATION_SESSION_KEY, None)
        request.session[SESSION_TENANT_KEY] = membership.tenant_id
        messages.success(request, f"You joined {membership.tenant.name}.")
        return redirect("home")
    return render(request, "workspace/invitation.html", {"invitation": invitation})


class ThrottledLoginView(AllauthLoginView):
    """allauth's log-in; a throttled attempt answers 429 (not 200) so clients and proxies can tell."""

    def form_invalid(self, form):
        response = super().form_invalid(form)
        throttled = any(error.code == "too_many_login_attempts" for error in form.errors.as_data().get("__all__", []))
        if throttled:
            response.status_code = 429
        return response


class WorkspaceSignupView(AllauthSignupView):
    """allauth's sign-up, handing the request to the form (it joins a pending invitation if any)."""

    def get_form_kwargs(self):
        kwargs = super().get_form_kwargs()
        kwargs["request"] = self.request
        return kwargs
