from django.urls import path

from . import views

urlpatterns = [
    path("t/<slug:tenant_slug>/<slug:program_slug>/terms/", views.program_terms_page, name="program_terms_page"),
    path("t/<slug:tenant_slug>/<slug:program_slug>/apply/", views.program_apply_page, name="program_apply_page"),
    path("u/<str:token>/", views.email_unsubscribe, name="email_unsubscribe"),
    path(
        "t/<slug:tenant_slug>/<slug:program_slug>/apply/confirm/<str:token>/",
        views.program_apply_confirm_page,
        name="program_apply_confirm",
    ),
]
