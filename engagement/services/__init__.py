"""Writes of engagement, by sub-domain (every name importable from ``engagement.services``):

- ``moments``: NPS responses and trigger events in (API, CSV, Typeform), processing by policy;
- ``asks``: scheduling and sending the invitation to refer;
- ``communications``: templates, the send log, in-app notifications, campaigns;
- ``webhooks``: outbound events to the tenant's CRM (Standard Webhooks);
- ``embedding``: short-lived signed dashboard URLs for the tenant's product.
"""

from .asks import ask_schedule, ask_send, asks_due
from .communications import (
    campaign_send,
    communication_deliver,
    communication_send,
    message_template_preview,
    message_template_save,
    message_template_test_send,
    program_update_send,
    reminders_send,
)
from .embedding import embed_token_create, embed_token_read, embed_url_create
from .moments import (
    PROMOTER_MIN_SCORE,
    Recorded,
    moment_process,
    moment_record,
    moment_validate,
    nps_import_create,
    nps_import_run,
)
from .webhooks import (
    deliveries_due,
    webhook_deliver,
    webhook_delivery_resend,
    webhook_emit,
    webhook_endpoint_create,
    webhook_endpoint_disable,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_update,
)

__all__ = [
    "PROMOTER_MIN_SCORE",
    "Recorded",
    "ask_schedule",
    "ask_send",
    "asks_due",
    "campaign_send",
    "communication_deliver",
    "communication_send",
    "deliveries_due",
    "embed_token_create",
    "embed_token_read",
    "embed_url_create",
    "message_template_preview",
    "message_template_save",
    "message_template_test_send",
    "moment_process",
    "moment_record",
    "moment_validate",
    "nps_import_create",
    "nps_import_run",
    "program_update_send",
    "reminders_send",
    "webhook_deliver",
    "webhook_delivery_resend",
    "webhook_emit",
    "webhook_endpoint_create",
    "webhook_endpoint_disable",
    "webhook_endpoint_rotate_secret",
    "webhook_endpoint_update",
]
