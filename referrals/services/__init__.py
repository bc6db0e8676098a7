"""Writes of the referrals app, by sub-domain (every name stays importable from ``referrals.services``):

- ``links``: referral links per participant and channel;
- ``stages``: creating referrals (screening, eligibility) and moving them through the funnel;
- ``identity``: the identity graph and touchpoints;
- ``signups``: sign-ups and leads, i.e. how a referral is established;
- ``conversions``: conversion events, stored raw and processed;
- ``attribution``: the credit of each event.
"""

from .attribution import (
    attribution_run,
)
from .conversions import (
    KIND_TARGET_STAGE,
    KINDS_THAT_CREATE_REFERRALS,
    MONEY_KINDS,
    ConversionEventConflict,
    ReceivedConversion,
    conversion_event_build,
    conversion_event_process,
    conversion_event_receive,
    conversion_event_status,
    conversion_events_insert_sql,
    conversion_events_process_many,
    conversion_events_requeue_stale,
    conversion_events_waiting,
    conversion_reattribute,
)
from .identity import (
    identity_link,
    identity_lock,
    participant_named_by,
    touchpoint_record,
)
from .links import (
    CODE_BYTES,
    new_referral_code,
    participant_links_deactivate,
    participant_links_ensure,
    referral_link_create,
)
from .signups import (
    QUALIFICATION_FIELDS,
    SignupOutcome,
    claim_touchpoint_record,
    claimed_link,
    code_link,
    fill_blanks,
    landing_lead_submit,
    lead_submit,
    link_accepts_referrals,
    link_by_model,
    orphans_requeue,
    referral_attribution_refresh,
    referral_establish,
    referral_signed_up_at,
    signup_record,
)
from .stages import (
    COMPANY_SIZE_BOUNDS,
    STAGE_SERVICES,
    referral_churn,
    referral_convert,
    referral_create,
    referral_eligibility_enforce,
    referral_eligibility_problems,
    referral_qualification_missing,
    referral_qualify,
    referral_reject,
    referral_screen,
    referral_sign_up,
    referral_stage_redate,
)

__all__ = [
    "CODE_BYTES",
    "COMPANY_SIZE_BOUNDS",
    "KINDS_THAT_CREATE_REFERRALS",
    "KIND_TARGET_STAGE",
    "MONEY_KINDS",
    "QUALIFICATION_FIELDS",
    "STAGE_SERVICES",
    "ConversionEventConflict",
    "ReceivedConversion",
    "SignupOutcome",
    "attribution_run",
    "claim_touchpoint_record",
    "claimed_link",
    "code_link",
    "conversion_event_build",
    "conversion_event_process",
    "conversion_event_receive",
    "conversion_event_status",
    "conversion_events_insert_sql",
    "conversion_events_process_many",
    "conversion_events_requeue_stale",
    "conversion_events_waiting",
    "conversion_reattribute",
    "fill_blanks",
    "identity_link",
    "identity_lock",
    "landing_lead_submit",
    "lead_submit",
    "link_accepts_referrals",
    "link_by_model",
    "new_referral_code",
    "orphans_requeue",
    "participant_links_deactivate",
    "participant_links_ensure",
    "participant_named_by",
    "referral_attribution_refresh",
    "referral_churn",
    "referral_convert",
    "referral_create",
    "referral_eligibility_enforce",
    "referral_eligibility_problems",
    "referral_establish",
    "referral_link_create",
    "referral_qualification_missing",
    "referral_qualify",
    "referral_reject",
    "referral_screen",
    "referral_sign_up",
    "referral_signed_up_at",
    "referral_stage_redate",
    "signup_record",
    "touchpoint_record",
]
