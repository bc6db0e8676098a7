"""The batched reads of a settlement chunk (issue 15): identity clusters walked in lock step, touchpoint
sequences read together, credits of many referrals at once — the same answers as one call per person, in a
few statements whatever the chunk's size, and never another tenant's rows."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from referrals import selectors
from referrals.models import IdentityKind, Referral
from referrals.selectors import (
    identity_cluster,
    identity_clusters,
    referral_credit,
    referral_credits,
    referral_for_identity,
    touchpoint_sequence,
    touchpoint_sequences,
)
from tests import factories as f
from tests.hypothesis_db import database_examples

KINDS = (IdentityKind.VISITOR, IdentityKind.EMAIL, IdentityKind.CUSTOMER)
NOW = timezone.now().replace(microsecond=0)


def node_value(kind: str, number: int) -> str:
    return f"p{number}@people.example" if kind == IdentityKind.EMAIL else f"{kind[:3]}-{number}"


def seed_of(kind: str, number: int) -> dict:
    key = {IdentityKind.VISITOR: "visitor_ids", IdentityKind.EMAIL: "emails", IdentityKind.CUSTOMER: "customer_ids"}
    return {key[kind]: [node_value(kind, number)]}


def build(tenant, world: dict):
    """Identity links between generated nodes, two programs with referrers' clicks and touchpoints on them, and
    referrals whose identities are some of the nodes."""
    nodes = [(KINDS[i % 3], i) for i in range(world["nodes"])]
    edges = {frozenset((a % len(nodes), b % len(nodes))) for a, b in world["edges"]}
    for edge in sorted(tuple(sorted(edge)) for edge in edges if len(edge) == 2):
        (a_kind, a_number), (b_kind, b_number) = nodes[edge[0]], nodes[edge[1]]
        f.IdentityLinkFactory(
            tenant=tenant,
            a_kind=a_kind,
            a_value=node_value(a_kind, a_number),
            b_kind=b_kind,
            b_value=node_value(b_kind, b_number),
        )
    programs = [f.ProgramFactory(tenant=tenant, slug=f"p{index}") for index in range(2)]
    links = [f.ReferralLinkFactory(participant=f.ParticipantFactory(program=program)) for program in programs * 2]
    rng = random.Random(world["seed"])
    for number in range(world["nodes"]):
        kind = KINDS[number % 3]
        if kind == IdentityKind.VISITOR and rng.random() < 0.7:
            link = rng.choice(links)
            f.ClickFactory(
                link=link,
                visitor_id=node_value(kind, number),
                occurred_at=NOW - timedelta(hours=rng.randrange(1, 400)),
                is_bot=rng.random() < 0.1,
            )
        if rng.random() < 0.5:
            link = rng.choice(links)
            shape = rng.choice(("program", "program", "nobody", "participant-only"))
            f.TouchpointFactory(
                tenant=tenant,
                participant=None if shape == "nobody" else link.participant,
                program=link.program if shape == "program" else None,
                email=node_value(kind, number) if kind == IdentityKind.EMAIL else "",
                visitor_id=node_value(kind, number) if kind == IdentityKind.VISITOR else "",
                customer_external_id=node_value(kind, number) if kind == IdentityKind.CUSTOMER else "",
                occurred_at=NOW - timedelta(hours=rng.randrange(1, 400)),
            )
    referrals = []
    for index, number in enumerate(dict.fromkeys(n % len(nodes) for n in world["referred"])):
        kind, value = nodes[number % len(nodes)][0], node_value(*nodes[number % len(nodes)])
        link = links[index % len(links)]
        referrals.append(
            f.ReferralFactory(
                program=link.program,
                referrer=link.participant,
                link=link,
                referred_email=value if kind == IdentityKind.EMAIL else f"other{index}@people.example",
                visitor_id=value if kind == IdentityKind.VISITOR else "",
                referred_external_id=value if kind == IdentityKind.CUSTOMER else "",
                established_at=NOW - timedelta(hours=rng.randrange(0, 200)),
            )
        )
    return nodes, referrals


worlds = st.fixed_dictionaries(
    {
        "nodes": st.integers(min_value=3, max_value=30),
        "edges": st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=45),
        "referred": st.lists(st.integers(0, 29), min_size=1, max_size=12),
        "seed": st.integers(0, 10_000),
        "max_nodes": st.sampled_from([3, 6, 200]),  # small caps: truncated clusters and the per-person fallback
    }
)


def credit_view(credit):
    return (
        credit.model,
        credit.anchor,
        credit.cluster.as_json(),
        [touch.as_json() for touch in credit.sequence],
        [touch.as_json() for touch in credit.credited],
        credit.result.participant_exact,
        credit.result.participant_amounts,
    )


def orm_sequence(tenant_id, program_id, cluster, until) -> list[dict]:
    """A person's sequence as the two ORM queries read it before they became one statement (issue 15): the
    specification ``touchpoint_sequence`` keeps."""
    from django.db.models import Q

    from referrals.models import Click, Touchpoint

    views = []
    clicks = Click.objects.filter(
        tenant_id=tenant_id, program_id=program_id, is_bot=False, visitor_id__in=cluster.visitor_ids
    ).filter(occurred_at__lte=until)
    for click in clicks.select_related("participant", "link") if cluster.visitor_ids else []:
        detail = f"link {click.link.code} ({click.get_channel_display()}), visitor {click.visitor_id}"
        view = {"ref": f"click:{click.pk}", "kind": "click", "participant": click.participant_id}
        view |= {"participant_name": click.participant.name, "at": click.occurred_at.isoformat(), "detail": detail}
        views.append((click.occurred_at, 0, click.pk, view))
    identity = Q()
    for name, values in (
        ("visitor_id", cluster.visitor_ids),
        ("email", cluster.emails),
        ("customer_external_id", cluster.customer_ids),
    ):
        if values:
            identity |= Q(**{f"{name}__in": values})
    touchpoints = Touchpoint.objects.filter(tenant_id=tenant_id, occurred_at__lte=until).filter(
        Q(program_id=program_id) | Q(program__isnull=True, participant__isnull=True)
    )
    for touch in touchpoints.filter(identity).select_related("participant") if identity else []:
        name = touch.participant.name if touch.participant else ""
        view = {"ref": f"touchpoint:{touch.pk}", "kind": touch.kind, "participant": touch.participant_id}
        view |= {"participant_name": name, "at": touch.occurred_at.isoformat(), "detail": touch.label}
        views.append((touch.occurred_at, 1, touch.pk, view))
    return [view for *_, view in sorted(views, key=lambda item: item[:3])]


@pytest.mark.django_db
@database_examples(15)
@given(world=worlds)
def test_batched_clusters_sequences_and_credits_equal_one_call_each(world):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(selectors, "IDENTITY_CLUSTER_MAX_NODES", world["max_nodes"])
        tenant = f.TenantFactory()
        nodes, referrals = build(tenant, world)
        seeds = [seed_of(kind, number) for kind, number in nodes]

        assert [c.as_json() for c in identity_clusters(tenant.pk, seeds)] == [
            identity_cluster(tenant.pk, **seed).as_json() for seed in seeds
        ]
        program_ids = sorted({referral.program_id for referral in referrals})
        wanted = [
            (program_ids[i % len(program_ids)], identity_cluster(tenant.pk, **seed), NOW - timedelta(hours=i * 7))
            for i, seed in enumerate(seeds)
        ]
        by_program = {r.program_id: r.program for r in referrals}
        assert [
            [t.as_json() for t in touchpoint_sequence(tenant.pk, program=by_program[p], cluster=c, until=u)]
            for p, c, u in wanted
        ] == [orm_sequence(tenant.pk, p, c, u) for p, c, u in wanted]
        assert [[t.as_json() for t in seq] for seq in touchpoint_sequences(tenant.pk, wanted)] == [
            [t.as_json() for t in touchpoint_sequence(tenant.pk, program=by_program[p], cluster=c, until=u)]
            for p, c, u in wanted
        ]
        assert [credit_view(c) for c in referral_credits(referrals)] == [
            credit_view(referral_credit(r)) for r in referrals
        ]


def test_a_chunk_of_credits_takes_a_few_statements_and_reads_only_its_tenant(world):
    program = f.ProgramFactory(tenant=world.a)
    link = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=program))
    other_program = f.ProgramFactory(tenant=world.b)
    other_link = f.ReferralLinkFactory(participant=f.ParticipantFactory(program=other_program))
    referrals = []
    for index in range(40):
        visitor = f"v-{index}"
        f.ClickFactory(link=link, visitor_id=visitor, occurred_at=NOW - timedelta(hours=2))
        # Another tenant's rows with the very same identifiers: never read, never credited.
        f.ClickFactory(link=other_link, visitor_id=visitor, occurred_at=NOW - timedelta(hours=1))
        f.IdentityLinkFactory(tenant=world.b, a_value=f"lead{index}@x.example", b_value=visitor)
        f.IdentityLinkFactory(tenant=world.a, a_value=f"lead{index}@x.example", b_value=visitor)
        referrals.append(
            f.ReferralFactory(
                program=program,
                referrer=link.participant,
                link=link,
                visitor_id=visitor,
                referred_email=f"lead{index}@x.example",
                established_at=NOW,
            )
        )
    referrals = list(Referral.objects.select_related("program", "rule_version").filter(tenant=world.a).order_by("pk"))

    with CaptureQueriesContext(connection) as batch:
        credits = referral_credits(referrals)
    with CaptureQueriesContext(connection) as one_by_one:
        expected = [referral_credit(r) for r in referrals]

    assert [credit_view(c) for c in credits] == [credit_view(c) for c in expected]
    assert all(set(c.result.participant_exact) == {link.participant_id} for c in credits)
    assert len(batch.captured_queries) <= 6, [q["sql"][:120] for q in batch.captured_queries]
    # one by one: the identity walk and the touchpoints (one statement since issue 15's tenth session) each
    assert len(one_by_one.captured_queries) >= 2 * len(referrals)


def test_a_persons_referral_is_matched_by_customer_then_email_then_visitor_oldest_first(world):
    program = f.ProgramFactory(tenant=world.a)
    referrer = f.ParticipantFactory(program=program)
    by_visitor = f.ReferralFactory(program=program, referrer=referrer, visitor_id="vis-1", referred_email="a@x.example")
    by_email = f.ReferralFactory(program=program, referrer=referrer, referred_email="p@x.example")
    second = f.ProgramFactory(tenant=world.a)
    by_email_later = f.ReferralFactory(
        program=second, referrer=f.ParticipantFactory(program=second), referred_email="p@x.example"
    )
    other_program = f.ProgramFactory(tenant=world.b)
    f.ReferralFactory(
        program=other_program,
        referrer=f.ParticipantFactory(program=other_program),
        referred_email="p@x.example",
        referred_external_id="cus-9",
    )
    cluster = identity_cluster(world.a, visitor_ids=["vis-1"], emails=["p@x.example"], customer_ids=["cus-9"])

    with CaptureQueriesContext(connection) as one:
        assert referral_for_identity(world.a, cluster=cluster) == by_email  # e-mail beats visitor id
    assert len(one.captured_queries) == 1
    by_customer = f.ReferralFactory(program=program, referrer=referrer, referred_external_id="cus-9")
    assert referral_for_identity(world.a, cluster=cluster) == by_customer  # the customer id beats both
    assert referral_for_identity(world.a, cluster=cluster, program=second) == by_email_later
    assert referral_for_identity(world.a, cluster=cluster, program=f.ProgramFactory(tenant=world.a)) is None
    only_visitor = identity_cluster(world.a, visitor_ids=["vis-1"])
    assert referral_for_identity(world.a, cluster=only_visitor) == by_visitor
    assert by_email_later.pk > by_email.pk
    # Tenant B's referral with the same customer id and e-mail was never matched for A (above); B finds its own.
    assert referral_for_identity(world.b, cluster=cluster).tenant_id == world.b.pk


def _loaded(instance) -> dict:
    """Every concrete field as loaded (JSON columns as Python values), for comparing two loads of a row."""
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


def test_the_matched_referral_is_loaded_as_the_orm_loads_it_with_its_program_referrer_and_version(world):
    """``referral_for_identity`` reads its row by hand (one statement, issue 15): the referral and the three
    models it carries have every field the ORM's ``select_related`` gives them — JSON columns parsed, a missing
    rule version None — and reading them again costs nothing."""
    program = f.ProgramFactory(tenant=world.a)
    referrer = f.ParticipantFactory(program=program)
    versioned = f.ReferralFactory(
        program=program,
        referrer=referrer,
        referred_email="json@x.example",
        qualification={"budget": "yes", "seats": 12},
        rule_version=f.ProgramVersionFactory(program=program),
    )
    unversioned = f.ReferralFactory(program=program, referrer=referrer, referred_external_id="cus-json")
    for referral, cluster in (
        (versioned, identity_cluster(world.a, emails=["json@x.example"])),
        (unversioned, identity_cluster(world.a, customer_ids=["cus-json"])),
    ):
        expected = Referral.objects.select_related("program", "referrer", "rule_version").get(pk=referral.pk)
        with CaptureQueriesContext(connection) as captured:
            found = referral_for_identity(world.a, cluster=cluster)
            related = (found.program, found.referrer, found.rule_version)
        assert len(captured.captured_queries) == 1
        assert _loaded(found) == _loaded(expected)
        assert [_loaded(item) if item else None for item in related] == [
            _loaded(item) if item else None for item in (expected.program, expected.referrer, expected.rule_version)
        ]
    assert found.rule_version is None and versioned.qualification == {"budget": "yes", "seats": 12}
    assert referral_for_identity(
        world.a, cluster=identity_cluster(world.a, emails=["json@x.example"])
    ).qualification == {
        "budget": "yes",
        "seats": 12,
    }
