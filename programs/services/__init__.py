"""Writes of the programs app, by sub-domain (every name stays importable from ``programs.services``):

- ``hosts``: allowed landing hosts;
- ``programs``: configuration and status;
- ``versions``: versioned rules;
- ``participants``: enrolment, status, tiers, coupon codes;
- ``imports``: participant CSV imports.

Every function is keyword-only, runs in one transaction, validates before it writes (raising
``ValidationError({"field": "message"})``), and records status changes in the audit trail.
"""

from .hosts import (
    host_is_allowed,
)
from .imports import (
    IMPORT_MAX_STORED_ERRORS,
    IMPORT_OPTIONAL_COLUMNS,
    IMPORT_REQUIRED_COLUMNS,
    participant_import_create,
    participant_import_inspect,
    participant_import_run,
)
from .participants import (
    COUPON_ALPHABET,
    COUPON_SUFFIX_LENGTH,
    PARTICIPANT_SOURCES,
    PARTICIPANT_TIER_RE,
    Enrolment,
    normalize_coupon_code,
    participant_application_confirm,
    participant_application_pending,
    participant_application_request,
    participant_apply,
    participant_approve,
    participant_coupon_code_ensure,
    participant_dashboard_link_reissue,
    participant_enroll,
    participant_for_referred_company,
    participant_invite_send,
    participant_links_ensure,
    participant_reinstate,
    participant_reject,
    participant_remove,
    participant_tier_normalize,
    participant_tier_set,
    participant_upsert,
    participant_validate,
    referred_company_row,
)
from .programs import (
    PROGRAM_EDITABLE_FIELDS,
    ProgramConfiguration,
    program_activate,
    program_archive,
    program_configure,
    program_create,
    program_pause,
    program_update,
    program_validate,
)
from .versions import (
    PROGRAM_RULE_FIELDS,
    RulesChange,
    current_version_or_none,
    judging_rules,
    program_current_version,
    program_rules_change,
    program_rules_snapshot,
    rules_validate,
    version_create,
    version_has_rewards,
)

__all__ = [
    "COUPON_ALPHABET",
    "COUPON_SUFFIX_LENGTH",
    "IMPORT_MAX_STORED_ERRORS",
    "IMPORT_OPTIONAL_COLUMNS",
    "IMPORT_REQUIRED_COLUMNS",
    "PARTICIPANT_SOURCES",
    "PARTICIPANT_TIER_RE",
    "PROGRAM_EDITABLE_FIELDS",
    "PROGRAM_RULE_FIELDS",
    "Enrolment",
    "ProgramConfiguration",
    "RulesChange",
    "current_version_or_none",
    "host_is_allowed",
    "judging_rules",
    "normalize_coupon_code",
    "participant_application_confirm",
    "participant_application_pending",
    "participant_application_request",
    "participant_apply",
    "participant_approve",
    "participant_coupon_code_ensure",
    "participant_dashboard_link_reissue",
    "participant_enroll",
    "participant_for_referred_company",
    "participant_import_create",
    "participant_import_inspect",
    "participant_import_run",
    "participant_invite_send",
    "participant_links_ensure",
    "participant_reinstate",
    "participant_reject",
    "participant_remove",
    "participant_tier_normalize",
    "participant_tier_set",
    "participant_upsert",
    "participant_validate",
    "program_activate",
    "program_archive",
    "program_configure",
    "program_create",
    "program_current_version",
    "program_pause",
    "program_rules_change",
    "program_rules_snapshot",
    "program_update",
    "program_validate",
    "referred_company_row",
    "rules_validate",
    "version_create",
    "version_has_rewards",
]
