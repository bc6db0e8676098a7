"""The partner portal (``/portal/``) and the public partner application pages."""

from django.urls import path

from . import views

portal_patterns = [
    path("", views.portal_home, name="portal_home"),
    path("links/", views.portal_links, name="portal_links"),
    path("links/<int:participant_id>/qr.png", views.portal_link_qr, name="portal_link_qr"),
    path("deals/", views.portal_deals, name="portal_deals"),
    path("deals/<int:pk>/", views.portal_deal_detail, name="portal_deal_detail"),
    path("deals/<int:pk>/extend/", views.portal_deal_extend, name="portal_deal_extend"),
    path("leads/", views.portal_leads, name="portal_leads"),
    path("statements/", views.portal_statements, name="portal_statements"),
    path("statements/<int:participant_id>/<str:period>.csv", views.portal_statement_csv, name="portal_statement_csv"),
    path(
        "statements/<int:participant_id>/<str:period>/print/",
        views.portal_statement_print,
        name="portal_statement_print",
    ),
    path("resources/", views.portal_resources, name="portal_resources"),
    path("resources/<int:pk>/download/", views.portal_resource_download, name="portal_resource_download"),
    path("tickets/", views.portal_tickets, name="portal_tickets"),
    path("tickets/<int:pk>/", views.portal_ticket_detail, name="portal_ticket_detail"),
    path("profile/", views.portal_profile, name="portal_profile"),
    path("team/", views.portal_team, name="portal_team"),
    path("payouts/", views.portal_payouts, name="portal_payouts"),
    path("invitations/<str:token>/", views.portal_invitation, name="portal_invitation"),
]

public_patterns = [
    path("partners/<slug:tenant_slug>/<slug:program_slug>/apply/", views.partner_apply, name="partner_apply"),
]
