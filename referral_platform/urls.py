from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from analytics import views as analytics_views
from onboarding.views import onboarding_page
from partners.urls import portal_patterns, public_patterns
from referral_platform.health import health
from referral_platform.tenancy import views as tenancy_views
from referral_platform.tenancy.admin_base import site as admin_site
from referrals import views as referral_views
from referrals.redirect import referral_redirect
from rewards import views as rewards_views

urlpatterns = [
    # The marketer's home is the analytics home (issue 10); everyone else gets the workspace home.
    path("", analytics_views.home, name="home"),
    path("", include("analytics.urls")),
    path("health/", health, name="health"),
    # Browsers ask for /favicon.ico on every page; a 404 there is a console error on every page.
    path("favicon.ico", RedirectView.as_view(url=f"{settings.STATIC_URL}favicon.svg", permanent=True), name="favicon"),
    path("admin/", admin_site.urls),
    path("accounts/login/", tenancy_views.ThrottledLoginView.as_view(), name="account_login"),
    path("accounts/signup/", tenancy_views.WorkspaceSignupView.as_view(), name="account_signup"),
    path("accounts/", include("allauth.urls")),
    path("workspace/members/", tenancy_views.workspace_members, name="workspace_members"),
    path("onboarding/", onboarding_page, name="onboarding"),
    path("workspace/switch/<slug:slug>/", tenancy_views.tenant_switch, name="tenant_switch"),
    path("invitations/<str:token>/", tenancy_views.invitation_accept_view, name="invitation_accept"),
    path("join/", referral_views.referral_landing_hosted, name="referral_landing_hosted"),
    path("join/<str:code>/", referral_views.referral_landing, name="referral_landing"),
    path("api/v1/", include("referral_platform.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("webhooks/stripe/<slug:tenant_slug>/", rewards_views.stripe_webhook, name="stripe_webhook"),
    # The dashboard page itself is engagement's (rewards' dashboard plus sharing, progress, notifications).
    path("", include("engagement.urls")),
    path("p/<str:token>/qr.png", rewards_views.participant_dashboard_qr, name="participant_dashboard_qr"),
    path("portal/", include(portal_patterns)),
    *public_patterns,
    path("", include("programs.urls")),
    # Answered by referrals.redirect before URL resolution; the pattern names it for reverse().
    path("r/<str:code>", referral_redirect, name="referral_redirect"),
    # Any other /api/v1/ path: the API's JSON 404, also with DEBUG on (whose technical 404 page is HTML).
    re_path(r"^api/v1/", csrf_exempt(lambda request: handler404(request)), name="api_not_found"),
]


def handler404(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"status": 404, "code": "not_found", "message": "Not found."}}, status=404)
    return render(request, "404.html", status=404)


def handler400(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"status": 400, "code": "invalid", "message": "Bad request."}}, status=400)
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def handler500(request):
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": {"status": 500, "code": "server_error", "message": "Something went wrong on our side."}},
            status=500,
        )
    from django.views.defaults import server_error

    return server_error(request)
