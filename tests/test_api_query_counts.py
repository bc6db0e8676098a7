"""No N+1 in list APIs: every list endpoint under /api/v1/ issues as many queries for 50 rows as for 5.

The table below has one entry per list endpoint (a view with DRF's ListModelMixin in
referral_platform/api_urls.py); ``test_every_list_endpoint_is_in_the_table`` fails when a list
endpoint is added without an entry. An entry's ``make(tenant, index)`` creates one row of the
endpoint with every related object its serializer reads, each row with its own related objects (a
shared one would hide a per-row query behind nothing: Django does not cache across instances, but
a fixture reusing one object makes a broken prefetch harder to see).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import URLPattern, URLResolver, reverse
from django.utils import timezone
from rest_framework.mixins import ListModelMixin

from referral_platform import api_urls
from referrals.models import ReferralStatus
from rewards.models import RewardStatus
from tests import factories as f


@dataclass(frozen=True)
class ListEndpoint:
    url_name: str  # in the "api" namespace
    make: Callable  # make(tenant, index): one row of the list, with its related objects
    params: dict = field(default_factory=dict)


def _program(tenant, index):
    return f.ProgramFactory(tenant=tenant, currency=("USD", "JPY", "KWD")[index % 3])


def _participant(tenant, index):
    return f.ParticipantFactory(program=_program(tenant, index))


def _referral(tenant, index):
    participant = _participant(tenant, index)
    version = f.ProgramVersionFactory(program=participant.program)
    return f.ReferralFactory(
        referrer=participant,
        rule_version=version,
        status=ReferralStatus.CONVERTED,
        referred_annual_revenue_minor=1_000_000,
        converted_at=timezone.now(),
    )


def _conversion(tenant, index):
    referral = _referral(tenant, index)
    event = f.ConversionEventFactory(tenant=tenant, referral=referral, status="processed")
    for share in ("0.5", "0.5"):
        f.AttributionFactory(
            participant=_participant(tenant, index), conversion_event=event, referral=referral, share=share
        )
    return event


def _programs(tenant, index):
    program = _program(tenant, index)
    f.ProgramVersionFactory(program=program)
    f.ProgramVersionFactory(program=program)


def _attributions(tenant, index):
    referral = _referral(tenant, index)
    f.AttributionFactory(
        participant=referral.referrer,
        referral=referral,
        rule_version=referral.rule_version,
        conversion_event=f.ConversionEventFactory(tenant=tenant, referral=referral),
        evidence={"conversion": {"kind": "payment", "amount_minor": 10_000, "currency": "USD"}, "sequence": []},
    )


def _rewards(tenant, index):
    event = _conversion(tenant, index)
    payout = f.PayoutFactory(participant=event.referral.referrer, status="paid")
    f.RewardFactory(
        participant=event.referral.referrer,
        conversion_event=event,
        referral=event.referral,
        payout=payout,
        status=RewardStatus.PAID,
        paid_at=timezone.now(),
        time_to_reward=timedelta(days=3),
    )


def _reward_evaluations(tenant, index):
    event = _conversion(tenant, index)
    f.RewardEvaluationFactory(conversion_event=event, referral=event.referral, status="done", rewards_created=2)
    for participant in {attribution.participant for attribution in event.attributions.all()}:
        f.RewardFactory(participant=participant, conversion_event=event, referral=event.referral)


def _deal(tenant, index):
    return f.DealRegistrationFactory(partner=f.PartnerFactory(tenant=tenant, tier=f.PartnerTierFactory(tenant=tenant)))


def _partner(tenant, index):
    partner = f.PartnerFactory(tenant=tenant, tier=f.PartnerTierFactory(tenant=tenant))
    for _ in range(2):
        f.PartnerEnrolmentFactory(partner=partner)


def _deal_conflict(tenant, index):
    f.DealConflictFactory(holder=_deal(tenant, index))


LIST_ENDPOINTS = [
    ListEndpoint("program-list", _programs),
    ListEndpoint("participant-list", lambda tenant, index: _participant(tenant, index)),
    ListEndpoint("referral-list", lambda tenant, index: _referral(tenant, index)),
    ListEndpoint("conversion-list", lambda tenant, index: _conversion(tenant, index)),
    ListEndpoint("attribution-list", _attributions),
    ListEndpoint("reward-list", _rewards),
    ListEndpoint("reward-evaluation-list", _reward_evaluations),
    ListEndpoint("deal-list", _deal),
    ListEndpoint("partner-list", _partner),
    ListEndpoint("deal-conflict-list", _deal_conflict),
    # analytics (issue 10)
    ListEndpoint(
        "analytics-other-customer-list",
        lambda tenant, index: f.OtherChannelCustomerFactory(tenant=tenant, external_id=f"other-{index}"),
    ),
]


# --- engagement ---------------------------------------------------------------------------------
def _moment(tenant, index, trigger="nps"):
    from engagement.models import Moment

    return Moment.objects.create(
        tenant=tenant, trigger=trigger, external_id=f"m{index}", program=_program(tenant, index),
        customer_external_id=f"c{index}", email=f"m{index}@c.example", occurred_at=timezone.now(),
    )  # fmt: skip


def _nps_import(tenant, index):
    from engagement.models import NpsImport

    return NpsImport.objects.create(tenant=tenant, filename=f"{index}.csv", content="x")


def _trigger_policy(tenant, index):
    from engagement.models import TriggerPolicy

    return TriggerPolicy.objects.create(tenant=tenant, program=_program(tenant, index), trigger="nps")


def _webhook_endpoint(tenant, index):
    from engagement.services import webhook_endpoint_create

    return webhook_endpoint_create(tenant=tenant, url=f"https://crm.example/{index}")


def _webhook_delivery(tenant, index):
    from engagement.models import WebhookDelivery, WebhookMessage

    message = WebhookMessage.objects.create(
        tenant=tenant, msg_id=f"msg_{index}", event_type="referral.created", payload={"i": index}, dedupe_key=str(index)
    )
    return WebhookDelivery.objects.create(tenant=tenant, endpoint=_webhook_endpoint(tenant, index), message=message)


LIST_ENDPOINTS += [
    ListEndpoint("nps-response-list", _moment),
    ListEndpoint("event-list", lambda tenant, index: _moment(tenant, index, trigger="renewal")),
    ListEndpoint("nps-import-list", _nps_import),
    ListEndpoint("trigger-policy-list", _trigger_policy),
    ListEndpoint("webhook-endpoint-list", _webhook_endpoint),
    ListEndpoint("webhook-delivery-list", _webhook_delivery),
]


def issubclass_safe(view_class, base) -> bool:
    return isinstance(view_class, type) and issubclass(view_class, base)


def _list_routes(patterns, namespace="api") -> set[str]:
    """Names of the URL patterns (under includes too) whose view lists rows (DRF's ListModelMixin)."""
    names = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}:{pattern.namespace}" if pattern.namespace else namespace
            names |= _list_routes(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern):
            callback = pattern.callback
            actions = getattr(callback, "actions", None)  # a viewset route: {"get": "list", ...}
            view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
            lists = "list" in actions.values() if actions else issubclass_safe(view_class, ListModelMixin)
            if lists:
                names.add(f"{namespace}:{pattern.name}".removeprefix("api:"))
    return names


def test_every_list_endpoint_is_in_the_table():
    listed = _list_routes(api_urls.urlpatterns)
    in_table = {endpoint.url_name for endpoint in LIST_ENDPOINTS}

    assert listed - in_table == set(), (
        f"List endpoints without a query-count case: {sorted(listed - in_table)}. Add a ListEndpoint to "
        "LIST_ENDPOINTS in tests/test_api_query_counts.py (a make(tenant, index) that creates one row)."
    )
    assert in_table - listed == set(), f"Table entries that are no list endpoint (any more): {in_table - listed}"


def _get(client, url, params, *, rows: int) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, {**params, "limit": 100})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == rows and len(body["results"]) == rows
    return [query["sql"] for query in queries.captured_queries]


@pytest.mark.parametrize("endpoint", LIST_ENDPOINTS, ids=lambda endpoint: endpoint.url_name)
def test_a_list_endpoint_issues_as_many_queries_for_50_rows_as_for_5(world, endpoint):
    client = world.api(world.key_a)
    url = reverse(f"api:{endpoint.url_name}")
    for index in range(5):
        endpoint.make(world.a, index)
    _get(client, url, endpoint.params, rows=5)  # the first request of a key records its use: not counted

    few = _get(client, url, endpoint.params, rows=5)
    for index in range(5, 50):
        endpoint.make(world.a, index)
    many = _get(client, url, endpoint.params, rows=50)

    assert len(many) == len(few), (
        f"{endpoint.url_name}: {len(few)} queries for 5 rows, {len(many)} for 50. Queries for 50 rows:\n"
        + "\n".join(many)
    )
