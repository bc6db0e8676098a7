"""What screening a new referral costs in a large workspace: the fraud checks' reads against indexed keys, and
the new referral's look for its person's orphaned events.

A billing run or a backfill creates many referrals at once, each screened by the program's fraud policy
(referrals.fraud.referral_fraud_signals). The self-referral checks look for the referrer's own mailbox among
the workspace's referrals, conversion events and identity links, and the duplicate-company check for the
program's earlier referrals of the same company; they now compare stored keys on indexes (referrals.mailbox:
generated mailbox and domain columns; the company key kept by Referral.save). Baseline, measured in the same
run on the same rows: the former reads (a case-insensitive regular expression per table, which no index
serves under row-level security, and a read of the program's whole window compared in Python); both must
find the same signals (a planted self-referral and duplicate company among the new referrals).

The orphans (referrals.services.signups.orphans_requeue): every new referral asks for the events of its person
that found no referral (unattributed: most of a workspace's billing events may be customers nobody referred).
Ours: the UPDATE with its status in the text, on the partial indexes per identifier; baseline, the statement as
it was (the status a parameter) without those indexes (dropped in a savepoint rolled back after it): both
prepared, both must find the same events.

Runs in a throw-away database with row-level security in force (the test settings' restricted role).

    BENCH_FRAUD_ROWS=100000 BENCH_FRAUD_SCREENS=40 python bench/bench_fraud.py
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "referral_platform.settings.test"

from bench.scratch import as_owner, in_scratch_database, progress  # noqa: E402

ROWS = int(os.environ.get("BENCH_FRAUD_ROWS", "100000"))
SCREENS = int(os.environ.get("BENCH_FRAUD_SCREENS", "40"))
BATCH = 5_000


def main() -> None:
    in_scratch_database("bench_fraud", run)


def seed():
    """A workspace with ROWS referrals (and half as many conversion events and identity links) of other
    people and companies, one program, its referrers; returns (tenant, program, referrers)."""
    from django.utils import timezone

    from programs.models import Participant, Program
    from referral_platform.tenancy.models import Tenant
    from referrals.models import ConversionEvent, FraudPolicy, IdentityLink, Referral

    tenant = Tenant.objects.create(slug="bench-fraud", name="Bench fraud", allowed_landing_domains=["bench.example"])
    program = Program.objects.create(
        tenant=tenant, name="Bench", slug="bench", landing_url="https://bench.example/", currency="USD", status="active"
    )
    FraudPolicy.objects.create(tenant=tenant, program=program, velocity_max_per_hour=1_000_000)
    referrers = Participant.objects.bulk_create(
        Participant(
            tenant=tenant,
            program=program,
            external_id=f"ref-{i}",
            name=f"Referrer {i}",
            email=f"referrer{i}@partner{i}.example",
            company=f"Partner {i}",
        )
        for i in range(50)
    )
    now = timezone.now()
    for low in range(0, ROWS, BATCH):
        numbers = range(low, min(low + BATCH, ROWS))
        Referral.objects.bulk_create(
            Referral(
                tenant=tenant,
                program=program,
                referrer=referrers[n % len(referrers)],
                visitor_id=f"vis-{n}",
                referred_email=f"buyer{n}@customer{n}.example",
                referred_company=f"Customer {n} Ltd",
                created_at=now - timedelta(minutes=n % 50_000),
            )
            for n in numbers
        )
        ConversionEvent.objects.bulk_create(
            ConversionEvent(
                tenant=tenant,
                external_event_id=f"evt-{n}",
                kind="sign_up",
                email=f"buyer{n}@customer{n}.example",
                visitor_id=f"vis-{n}",
                occurred_at=now,
            )
            for n in numbers[::2]
        )
        ConversionEvent.objects.bulk_create(  # orphans: payments of customers nobody referred
            ConversionEvent(
                tenant=tenant,
                external_event_id=f"pay-{n}",
                kind="payment",
                status="unattributed",
                email=f"payer{n}@customer{n}.example",
                customer_external_id=f"cust-{n}",
                visitor_id=f"pay-vis-{n}",
                occurred_at=now,
            )
            for n in numbers[1::2]
        )
        IdentityLink.objects.bulk_create(
            IdentityLink(
                tenant=tenant,
                a_kind="email",
                a_value=f"buyer{n}@customer{n}.example",
                b_kind="visitor",
                b_value=f"vis-{n}",
                source="bench",
            )
            for n in numbers[::2]
        )
        progress("seeding the workspace", numbers[-1] + 1, ROWS)
    as_owner("ANALYZE referrals_referral, referrals_conversionevent, referrals_identitylink")  # as autovacuum would
    return tenant, program, referrers


def new_referrals(tenant, program, referrers) -> list:
    """SCREENS new referrals: one the referrer's own sign-up (self-referral), one a company already referred
    (duplicate company), the rest unrelated."""
    from django.utils import timezone

    from referrals.models import ConversionEvent, Referral

    made = []
    for i in range(SCREENS):
        ConversionEvent.objects.create(  # the new person's payment, processed before the referral existed
            tenant=tenant,
            external_event_id=f"new-pay-{i}",
            kind="payment",
            status="unattributed",
            email=f"newbuyer{i}@newco{i}.example",
            customer_external_id=f"newcust-{i}",
            occurred_at=timezone.now(),
        )
        referrer = referrers[i % len(referrers)]
        email, company = f"newbuyer{i}@newco{i}.example", f"New Co {i}"
        if i == 0:
            email = referrer.email.replace("@", "+self@")  # the referrer's own mailbox
        if i == 1:
            email, company = "cfo@customer77.example", "Customer 77 Limited"  # referred before (row 77)
        made.append(
            Referral.objects.create(
                tenant=tenant,
                program=program,
                referrer=referrer,
                visitor_id=f"new-vis-{i}",
                referred_email=email,
                referred_company=company,
            )
        )
    return made


# --- the former reads (the baseline) -------------------------------------------------------------------
def _former_regex(normalized_email: str) -> str:
    local, _, domain = normalized_email.rpartition("@")
    if not local or not domain:
        return ""
    if domain == "gmail.com":
        local_re = r"\.*" + "".join(re.escape(char) + r"\.*" for char in local)
        domain_re = r"(gmail|googlemail)\.com"
    else:
        local_re, domain_re = re.escape(local), re.escape(domain)
    return rf"^{local_re}(\+[^@]*)?@{domain_re}\.?$"


def former_signals(referral, policy) -> set[str]:
    """The self-referral and duplicate-company reads as they were before the keys: which signals they find."""
    from django.db.models import Q

    from referrals.fraud import company_email_domain, email_domain, normalise_company_name
    from referrals.fraud import normalize_email_for_matching as mailbox
    from referrals.models import ConversionEvent, IdentityLink, Referral

    found = set()
    pattern = _former_regex(mailbox(referral.referrer.email))
    own = list(
        Referral.objects.for_tenant(referral.tenant_id)
        .filter(referred_email__iregex=pattern)
        .exclude(pk=referral.pk)
        .exclude(visitor_id="")[:100]
    )
    own += list(ConversionEvent.objects.for_tenant(referral.tenant_id).filter(email__iregex=pattern)[:100])
    link = Q(a_kind="email", a_value__iregex=pattern, b_kind="visitor") | Q(
        b_kind="email", b_value__iregex=pattern, a_kind="visitor"
    )
    own += list(IdentityLink.objects.for_tenant(referral.tenant_id).filter(link)[:100])
    if mailbox(referral.referred_email) == mailbox(referral.referrer.email):
        found.add("self_referral_email")
    name_key, email_key = normalise_company_name(referral.referred_company), mailbox(referral.referred_email)
    company_domain = company_email_domain(referral.referred_email)
    since = referral.created_at - timedelta(days=policy.duplicate_company_window_days)
    window = (
        Referral.objects.for_tenant(referral.tenant_id)
        .filter(program_id=referral.program_id, created_at__gte=since, created_at__lte=referral.created_at)
        .exclude(pk=referral.pk)
        .only("pk", "referred_company", "referred_email", "created_at")
    )
    for row in window.iterator(chunk_size=2000):
        if (
            (name_key and normalise_company_name(row.referred_company) == name_key)
            or (company_domain and email_domain(row.referred_email) == company_domain)
            or (email_key and mailbox(row.referred_email) == email_key)
        ):
            found.add("duplicate_company")
            break
    return found


def former_orphans_statement(*, tenant_id: int, cluster, referral_id: int) -> tuple[str, list]:
    """``orphans_statement`` as it was: the status a parameter."""
    from referrals.models import ConversionEventStatus

    identity = [
        (column, sorted(values))
        for column, values in (
            ("customer_external_id", cluster.customer_ids),
            ("email", cluster.emails),
            ("visitor_id", cluster.visitor_ids),
        )
        if values
    ]
    matches = " OR ".join(f"{column} = ANY(%s)" for column, _values in identity)
    return (
        "UPDATE referrals_conversionevent SET status = %s, error = %s "  # noqa: S608 - no input in the text
        f"WHERE tenant_id = %s AND referral_id IS NULL AND status = %s AND ({matches}) RETURNING id",
        [
            ConversionEventStatus.RECEIVED,
            f"Processed again: referral #{referral_id} now exists.",
            tenant_id,
            ConversionEventStatus.UNATTRIBUTED,
            *(values for _column, values in identity),
        ],
    )


@contextlib.contextmanager
def without_orphan_indexes():
    """The orphans' partial indexes dropped for the block (in a savepoint rolled back after it: DDL is
    transactional in PostgreSQL; the owner's right)."""
    from django.db import transaction

    sid = transaction.savepoint()
    as_owner(f"DROP INDEX {', '.join(f'conversion_orphan_{name}_idx' for name in ('customer', 'email', 'visitor'))}")
    try:
        yield
    finally:
        transaction.savepoint_rollback(sid)


def orphans_found(build, referral, index: int) -> tuple[list[int], float]:
    """The events the orphans' UPDATE built by ``build`` finds for ``referral``'s person (in a savepoint rolled
    back), and the seconds it took."""
    from django.db import connection, transaction

    from referral_platform.db.prepared import execute_prepared
    from referrals.selectors import IdentityCluster

    cluster = IdentityCluster(
        emails={referral.referred_email}, customer_ids={f"newcust-{index}"}, visitor_ids={referral.visitor_id}
    )
    sql, params = build(tenant_id=referral.tenant_id, cluster=cluster, referral_id=referral.pk)
    sid = transaction.savepoint()
    at = time.perf_counter()
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, params)
        found = sorted(pk for (pk,) in cursor.fetchall())
    took = time.perf_counter() - at
    transaction.savepoint_rollback(sid)
    return found, took


def run() -> None:
    from django.db import transaction

    from referral_platform.tenancy import rls
    from referrals.fraud import policy_for_program, referral_fraud_signals
    from referrals.services.signups import orphans_statement

    started = time.perf_counter()
    tenant, program, referrers = seed()
    print(f"[bench_fraud] seeded {ROWS:,} referrals in {time.perf_counter() - started:.1f}s", flush=True)
    with transaction.atomic(), rls.tenant(tenant.pk):
        made = new_referrals(tenant, program, referrers)
        policy = policy_for_program(program)
        timings = {"ours": 0.0, "former": 0.0, "orphans": 0.0, "orphans_former": 0.0}
        ours, former, orphans, orphans_same = {}, {}, {}, True
        for index, referral in enumerate(made):
            at = time.perf_counter()
            ours[referral.pk] = {signal.code for signal in referral_fraud_signals(referral=referral, policy=policy)}
            timings["ours"] += time.perf_counter() - at
            at = time.perf_counter()
            former[referral.pk] = former_signals(referral, policy)
            timings["former"] += time.perf_counter() - at
            found, took = orphans_found(orphans_statement, referral, index)
            timings["orphans"] += took
            orphans[referral.pk] = found
        with without_orphan_indexes():  # the former statement as it ran: no index on e-mails or visitor ids
            for index, referral in enumerate(made):
                found, took = orphans_found(former_orphans_statement, referral, index)
                timings["orphans_former"] += took
                orphans_same = orphans_same and found == orphans[referral.pk] and len(found) == 1
            progress("screening new referrals", index + 1, len(made))
        transaction.set_rollback(True)
    checked = ("self_referral_email", "duplicate_company")
    same = all({code for code in ours[pk] if code in checked} == former[pk] for pk in ours)
    planted = "self_referral_email" in ours[made[0].pk] and "duplicate_company" in ours[made[1].pk]
    per_ours, per_former = timings["ours"] / len(made) * 1000, timings["former"] / len(made) * 1000
    print(f"\nFraud screening of a new referral, workspace of {ROWS:,} referrals (row-level security on)")
    print(f"  ours    every check of the policy, indexed keys      {per_ours:9.2f} ms per referral")
    print(f"  former  regex reads + the program's window in Python {per_former:9.2f} ms per referral (baseline)")
    print(f"  ours/former time                                     {per_ours / per_former:9.3f}x")
    print(f"  same self-referral and duplicate-company findings: {same}; planted ones found: {planted}")
    per_orphans, per_orphans_former = (timings[name] / len(made) * 1000 for name in ("orphans", "orphans_former"))
    print(f"\nThe new referral's orphans, workspace of {ROWS // 2:,} unattributed events (prepared, generic plan)")
    print(f"  ours    status in the text, partial indexes          {per_orphans:9.3f} ms per referral")
    print(f"  former  status a parameter, no partial indexes      {per_orphans_former:9.3f} ms per referral (baseline)")
    print(f"  ours/former time                                     {per_orphans / per_orphans_former:9.3f}x")
    print(f"  the same orphan found by both, for every new person: {orphans_same}")
    if not (same and planted and orphans_same):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
