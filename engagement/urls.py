from django.urls import path

from . import views

urlpatterns = [
    path("p/<str:token>/", views.participant_dashboard, name="participant_dashboard"),
    path("p/<str:token>/leaderboard/", views.participant_leaderboard, name="participant_leaderboard"),
    path("embed/<str:token>/", views.embedded_dashboard, name="embedded_dashboard"),
    path("webhooks/typeform/<slug:tenant_slug>/", views.typeform_webhook, name="typeform_webhook"),
]
