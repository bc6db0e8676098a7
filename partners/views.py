from django.http import Http404


def portal_home(request, **kwargs):
    raise Http404


def portal_links(request, **kwargs):
    raise Http404


def portal_link_qr(request, **kwargs):
    raise Http404


def portal_deals(request, **kwargs):
    raise Http404


def portal_deal_detail(request, **kwargs):
    raise Http404


def portal_deal_extend(request, **kwargs):
    raise Http404


def portal_leads(request, **kwargs):
    raise Http404


def portal_statements(request, **kwargs):
    raise Http404


def portal_statement_csv(request, **kwargs):
    raise Http404


def portal_statement_print(request, **kwargs):
    raise Http404


def portal_resources(request, **kwargs):
    raise Http404


def portal_resource_download(request, **kwargs):
    raise Http404


def portal_tickets(request, **kwargs):
    raise Http404


def portal_ticket_detail(request, **kwargs):
    raise Http404


def portal_profile(request, **kwargs):
    raise Http404


def portal_team(request, **kwargs):
    raise Http404


def portal_payouts(request, **kwargs):
    raise Http404


def portal_invitation(request, **kwargs):
    raise Http404


def partner_apply(request, **kwargs):
    raise Http404
