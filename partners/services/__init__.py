"""Writes of the partners app, by sub-domain (every name importable from ``partners.services``):

- ``organisations``: partner companies, enrolment in programs, team invitations;
- ``applications``: the public application and the marketer's decision;
- ``deals``: deal registration, protection, extensions, stages, commission and conflicts;
- ``tiers``: tier rules recomputed over a rolling period, tier history;
- ``tickets``: support tickets; ``resources``: the resource library.
"""

from .applications import application_approve, application_reject, application_submit, program_takes_applications
from .deals import (
    Account,
    account_of,
    conflict_resolve,
    deal_approve,
    deal_commission_key,
    deal_expire,
    deal_extend,
    deal_register,
    deal_reject,
    deal_stage_update,
    deals_expire,
    deals_warn_expiring,
    holders_matching,
    program_settings,
)
from .organisations import (
    partner_create,
    partner_enrol,
    partner_invitation_accept,
    partner_invitation_create,
    partner_invitation_for_token,
    partner_invitation_sign_up,
    partner_status_set,
    partner_update,
    partner_user_deactivate,
)
from .resources import resource_download_record, resource_visible_to
from .tickets import ticket_close, ticket_open, ticket_reply
from .tiers import partner_tier_change, partner_tier_recompute, partner_tiers_recompute, tier_target

__all__ = [
    "Account",
    "account_of",
    "application_approve",
    "application_reject",
    "application_submit",
    "conflict_resolve",
    "deal_approve",
    "deal_commission_key",
    "deal_expire",
    "deal_extend",
    "deal_register",
    "deal_reject",
    "deal_stage_update",
    "deals_expire",
    "deals_warn_expiring",
    "holders_matching",
    "partner_create",
    "partner_enrol",
    "partner_invitation_accept",
    "partner_invitation_create",
    "partner_invitation_for_token",
    "partner_invitation_sign_up",
    "partner_status_set",
    "partner_tier_change",
    "partner_tier_recompute",
    "partner_tiers_recompute",
    "partner_update",
    "partner_user_deactivate",
    "program_settings",
    "program_takes_applications",
    "resource_download_record",
    "resource_visible_to",
    "ticket_close",
    "ticket_open",
    "ticket_reply",
    "tier_target",
]
