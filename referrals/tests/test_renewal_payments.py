"""A billing run's renewals (issue 15's warm path): a payment of a referral already converted and established
before it is processed with fewer statements — the moment of the referral's earliest settled event and the
person's touchpoints up to its establishment are read with the referral (no aggregate of its own for
``referral_establish``, no sequence read for the credit), and the touchpoint of the payment's referral code is
written by the outcome's statement (``_codes_later``). Nothing of the outcome changes: the
same touchpoints, credit, establishment and stages as when each is written on its own, whatever the delivery
order; a payment dated before the establishment (an old invoice delivered late) still takes the immediate
path."""

from __future__ import annotations

import json
import random
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from referrals import services
from referrals.models import Attribution, ConversionEvent, Referral, Touchpoint
from referrals.services import conversions
from tests import factories as f
from tests.hypothesis_db import WITHOUT_SHRINKING, database_examples

from .builders import program_for, referrer_with_link

NOW = timezone.now().replace(microsecond=0)


def workspace(tenant, *, model: str = "last_touch"):
    program = program_for(tenant, attribution_model=model, cookie_window_days=60)
    f.ProgramVersionFactory(program=program)
    _dana, dana = referrer_with_link(program, code=f"dana{tenant.pk}")
    _ravi, ravi = referrer_with_link(program, name="Ravi Menon", company="Contoso", code=f"ravi{tenant.pk}")
    return {"dana": dana.code, "ravi": ravi.code}


def receive(tenant, external_id: str, *, kind: str = "payment", at, code: str = "", customer: str = "cus_1"):
    data = {"external_event_id": external_id, "kind": kind, "customer_external_id": customer, "occurred_at": at}
    if kind == "payment":
        data.update(amount_minor=9_900, currency="USD")
    if code:
        data["referral_code"] = code
    raw = {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in data.items()}
    return services.conversion_event_receive(tenant=tenant, raw=raw, queue_processing=False, **data).event


def process_received(tenant) -> None:
    """Process every ``received`` event one by one, round after round (an event processed before its referral
    existed is queued again, as the drain's next round would run it)."""
    for _round in range(5):
        ids = list(
            ConversionEvent.objects.filter(tenant=tenant, status="received").order_by("pk").values_list("pk", flat=True)
        )
        if not ids:
            return
        for event_id in ids:
            services.conversion_event_process(event_id=event_id)
    raise AssertionError("events still received after 5 rounds")


def processed_with_statements(event: ConversionEvent) -> tuple[ConversionEvent, list[str]]:
    """The event processed, and every SQL string its processing sent."""
    with CaptureQueriesContext(connection) as captured:
        processed = services.conversion_event_process(event_id=event.pk)
    return processed, [query["sql"] for query in captured.captured_queries]


def state(tenant) -> dict:
    """Everything the processing wrote, without ids: touchpoints, credit, events' outcomes, the referral."""
    external = dict(ConversionEvent.objects.filter(tenant=tenant).values_list("pk", "external_event_id"))

    def key(dedupe: str) -> str:
        head, _sep, pk = dedupe.rpartition(":")
        return f"{head}:{external.get(int(pk), pk)}" if pk.isdigit() else dedupe

    touchpoints = sorted(
        (
            key(t.dedupe_key),
            t.kind,
            re.sub(r"\d+$", "", t.label),  # a code ends with its workspace's id
            t.occurred_at,
            t.participant.name if t.participant else None,
            t.program_id is not None,
            re.sub(r"\d+$", "", t.link.code) if t.link else None,
            t.referral is not None,
            t.customer_external_id,
        )
        for t in Touchpoint.objects.filter(tenant=tenant).select_related("participant", "link", "referral")
    )
    credit = sorted(
        (event_id, name, share, amount, _masked(evidence))
        for event_id, name, share, amount, evidence in Attribution.objects.filter(tenant=tenant).values_list(
            "conversion_event__external_event_id", "participant__name", "share", "amount_minor", "evidence"
        )
    )
    events = sorted(ConversionEvent.objects.filter(tenant=tenant).values_list("external_event_id", "status"))
    referrals = sorted(
        Referral.objects.filter(tenant=tenant).values_list(
            "referrer__name", "status", "established_at", "converted_at", "signed_up_at"
        )
    )
    return {"touchpoints": touchpoints, "credit": credit, "events": events, "referrals": referrals}


def _masked(evidence: dict) -> str:
    """An attribution's evidence (the touchpoints credited, the window, the model) without row ids and codes."""
    text = json.dumps(evidence, sort_keys=True)
    text = re.sub(r'"(click|touchpoint|referral):\d+"', r'"\1:N"', text)
    text = re.sub(r'"(id|participant|rule_version)": \d+', r'"\1": N', text)  # (the factory numbers versions)
    return re.sub(r"(dana|ravi)\d+", r"\1", text)


def test_a_renewal_reads_the_earliest_event_with_its_referral_and_writes_its_code_with_its_outcome(world):
    codes = workspace(world.a)
    receive(world.a, "pay-1", at=NOW - timedelta(days=30), code=codes["dana"])
    process_received(world.a)
    renewal = receive(world.a, "pay-2", at=NOW - timedelta(hours=1), code=codes["dana"])

    processed, statements = processed_with_statements(renewal)

    assert processed.status == "processed"
    assert not [sql for sql in statements if 'MIN("referrals_conversionevent"' in sql], "read with the referral"
    # The person's touchpoints up to the establishment are read with the referral (``with_sequence``).
    assert not [sql for sql in statements if re.search(r"(^|;\s*)SELECT 0 AS src", sql.lstrip())]
    assert len([sql for sql in statements if "json_agg(json_build_array(src" in sql]) == 1
    touchpoint_writes = [sql for sql in statements if 'INTO "referrals_touchpoint"' in sql]
    assert len(touchpoint_writes) == 1 and 'INSERT INTO "referrals_attribution"' in touchpoint_writes[0]
    written = Touchpoint.objects.get(tenant=world.a, dedupe_key=f"conversion:code:{renewal.pk}")
    referral = Referral.objects.get(tenant=world.a)
    assert (written.kind, written.label, written.occurred_at) == ("referral_code", codes["dana"], renewal.occurred_at)
    assert (written.participant_id, written.program_id, written.referral_id) == (
        referral.referrer_id,
        referral.program_id,
        referral.pk,
    )
    assert written.link.code == codes["dana"] and written.customer_external_id == "cus_1"
    # The credit is the establishment's (the first payment's code), not the renewal's touch.
    assert referral.established_at == NOW - timedelta(days=30)
    assert list(Attribution.objects.filter(conversion_event=renewal).values_list("participant__name", flat=True)) == [
        "Dana Whitfield"
    ]


def test_an_old_invoice_delivered_late_moves_the_establishment_and_is_written_at_once(world):
    codes = workspace(world.a)
    receive(world.a, "pay-2", at=NOW - timedelta(days=2), code=codes["dana"])
    process_received(world.a)
    late = receive(world.a, "pay-1", at=NOW - timedelta(days=20), code=codes["ravi"])

    _processed, statements = processed_with_statements(late)

    standalone = [
        sql for sql in statements if 'INTO "referrals_touchpoint"' in sql and "referrals_attribution" not in sql
    ]
    assert len(standalone) == 1, "a payment before the establishment can be seen by this processing's reads"
    referral = Referral.objects.get(tenant=world.a)
    assert referral.established_at == NOW - timedelta(days=20)
    # Established at the older payment, whose code (Ravi's) is then the last touch of both payments.
    assert set(Attribution.objects.filter(tenant=world.a).values_list("participant__name", flat=True)) == {"Ravi Menon"}


def test_another_workspaces_events_never_count_as_the_referrals_earliest(world):
    codes = workspace(world.a)
    receive(world.a, "pay-1", at=NOW - timedelta(days=10), code=codes["dana"])
    process_received(world.a)
    referral = Referral.objects.get(tenant=world.a)
    other = workspace(world.b)
    foreign = receive(world.b, "pay-b", at=NOW - timedelta(days=50), code=other["dana"])
    process_received(world.b)
    # A corrupt row pointing at the referral of another workspace (only the superuser connection can write it).
    ConversionEvent.objects.filter(pk=foreign.pk).update(referral_id=referral.pk)

    from referrals.selectors import (
        EARLIEST_UNREAD,
        earliest_settled_as_read,
        identity_cluster,
        referral_for_identity,
        referrals_for_identities,
    )

    cluster = identity_cluster(world.a.pk, customer_ids=["cus_1"])
    found = referral_for_identity(world.a, cluster=cluster, with_sequence=True)
    assert found.pk == referral.pk and earliest_settled_as_read(found) == NOW - timedelta(days=10)
    # The same for a chunk's people read ahead (referrals_for_identities).
    [(answered, ahead)] = referrals_for_identities(world.a, [(cluster, None)])
    assert answered and ahead.pk == referral.pk and earliest_settled_as_read(ahead) == NOW - timedelta(days=10)
    # Other callers of the match (a sign-up) do not pay for what only conversion processing asks next.
    assert earliest_settled_as_read(referral_for_identity(world.a, cluster=cluster)) is EARLIEST_UNREAD


PAYMENT_DAYS = st.lists(st.integers(min_value=1, max_value=59), min_size=2, max_size=5, unique=True)


@pytest.mark.django_db
@database_examples(8, phases=WITHOUT_SHRINKING)
@given(
    days=PAYMENT_DAYS,
    signed_up=st.one_of(st.none(), st.integers(min_value=1, max_value=59)),
    codes_of=st.lists(st.sampled_from(["dana", "ravi", ""]), min_size=5, max_size=5),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_writing_codes_with_the_outcome_ends_exactly_as_writing_them_at_once_in_any_delivery_order(
    days, signed_up, codes_of, seed, monkeypatch
):
    """Payments (each with Dana's, Ravi's or no code) of one customer, perhaps a sign-up, delivered in a random
    order: the end state equals the one of the same deliveries with every touchpoint inserted when recorded."""
    from referral_platform.tenancy.models import Tenant

    def build():
        tenant = f.TenantFactory()
        codes = workspace(tenant)
        specs = [
            (f"pay-{day}", "payment", NOW - timedelta(days=day), codes.get(codes_of[i], ""))
            for i, day in enumerate(days)
        ]
        if signed_up is not None:
            specs.append(("sign-up", "sign_up", NOW - timedelta(days=signed_up), codes["dana"]))
        if not any(code for *_rest, code in specs):
            specs[0] = (*specs[0][:3], codes["dana"])
        random.Random(seed).shuffle(specs)
        return tenant, specs

    ends = []
    for deferred in (True, False):
        with monkeypatch.context() as patch:
            if not deferred:
                patch.setattr(conversions, "_codes_later", lambda *args, **kwargs: False)
                patch.setattr(conversions, "sequence_remember_as_read", lambda *args, **kwargs: None)
            tenant, specs = build()
            # Delivered in that order, each processed before the next arrives (a renewal finds its referral).
            for external_id, kind, at, code in specs:
                receive(tenant, external_id, kind=kind, at=at, code=code)
                process_received(tenant)
            ends.append(state(tenant))
        assert Tenant.objects.filter(pk=tenant.pk).exists()
    with_outcome, at_once = ends
    assert with_outcome == at_once
    assert with_outcome["referrals"] and with_outcome["touchpoints"]
