"""Benchmark URLconf: the project's URLs plus the floor (a bare 302 view) and the peer (pinax)."""

from django.http import HttpResponseRedirect
from django.urls import include, path

from referral_platform.urls import handler404  # noqa: F401  (same 404 handling as the project)
from referral_platform.urls import urlpatterns as project_urlpatterns


def bare_redirect(request, code: str):
    """The floor: Django with the project's middleware, answering a fixed 302 and nothing else."""
    return HttpResponseRedirect("https://bench.example/landing")


urlpatterns = [
    path("bench/bare/<str:code>", bare_redirect, name="bench_bare_redirect"),
    path("pinax/", include("pinax.referrals.urls", namespace="pinax_referrals")),
    *project_urlpatterns,
]
