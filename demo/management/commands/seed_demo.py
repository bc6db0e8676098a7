"""Load a realistic demo: two workspaces, programs, participants with links, clicks and referrals.

Idempotent: re-running keeps the data and issues a fresh demo API key (the previous one is revoked),
because a key's secret is shown only once.
"""

from __future__ import annotations

import random
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.test.utils import override_settings
from django.utils import timezone

from demo.partners import seed_partners
from programs.models import Participant, Program, ProgramAccess, ProgramKind, ProgramStatus
from programs.services import participant_enroll, program_current_version
from referral_platform.console import progress_bar
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import ApiKey, Membership, Role, Tenant
from referral_platform.tenancy.services import api_key_create, api_key_revoke
from referrals.fraud_services import fraud_policy_get_or_create
from referrals.models import Click, Referral, ReferralLink, ReferralStatus

DEMO_PASSWORD = "demo-pass-2026"  # noqa: S105 - published demo login
DEMO_KEY_NAME = "Demo key (seed_demo)"

CUSTOMERS = [
    ("cus_1001", "Dana Whitfield", "dana@northwind.example", "Northwind Traders"),
    ("cus_1002", "Ravi Menon", "ravi@contoso.example", "Contoso Ltd"),
    ("cus_1003", "Sofia Marquez", "sofia@fabrikam.example", "Fabrikam"),
    ("cus_1004", "Tomás Novak", "tomas@initech.example", "Initech"),
    ("cus_1005", "Aiko Tanaka", "aiko@umbrella.example", "Umbrella Corp"),
    ("cus_1006", "Kwame Mensah", "kwame@hooli.example", "Hooli"),
    ("cus_1007", "Lena Fischer", "lena@stark.example", "Stark Industries"),
    ("cus_1008", "Omar Haddad", "omar@wayne.example", "Wayne Enterprises"),
]
PARTNERS = [
    ("ptn_01", "Priya Sharma", "priya@growthagency.example", "Growth Agency"),
    ("ptn_02", "Marco Rossi", "marco@resellpro.example", "ResellPro"),
    ("ptn_03", "Nina Petrova", "nina@saasreviews.example", "SaaS Reviews Blog"),
]
REFERRED = [
    ("jane@globalbank.example", "Global Bank", ReferralStatus.CONVERTED),
    ("li@medicorp.example", "MediCorp", ReferralStatus.QUALIFIED),
    ("sam@retailhub.example", "RetailHub", ReferralStatus.SIGNED_UP),
    ("eva@logistix.example", "Logistix", ReferralStatus.SIGNED_UP),
    ("ben@edutech.example", "EduTech", ReferralStatus.CLICKED),
    ("ola@fintrack.example", "FinTrack", ReferralStatus.REJECTED),
    ("max@cloudnine.example", "CloudNine", ReferralStatus.CONVERTED),
]
# Referrals that fraud screening flags, so the review queue has something to show:
# (referrer's external id, referred e-mail, company, why it is flagged).
FRAUD_EXAMPLES = [
    ("cus_1001", "Dana+trial@northwind.example", "Northwind Trial", "self-referral: the referrer's own mailbox"),
    ("cus_1002", "buyer@mailinator.com", "Quick Deals LLC", "disposable e-mail domain"),
]
STAGES = [
    (ReferralStatus.CLICKED, "clicked_at"),
    (ReferralStatus.SIGNED_UP, "signed_up_at"),
    (ReferralStatus.QUALIFIED, "qualified_at"),
    (ReferralStatus.CONVERTED, "converted_at"),
]
USER_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
]


def progress(done: int, total: int, label: str) -> None:
    progress_bar(label, done, total)


class Command(BaseCommand):
    help = "Load demo workspaces (Acme Analytics, Globex) with programs, participants, links, clicks, referrals."

    def add_arguments(self, parser):
        parser.add_argument("--json", help="Also write the demo logins and API key to this file.")
        parser.add_argument("--clicks", type=int, default=400)
        parser.add_argument(
            "--history-days",
            type=int,
            default=365,
            help="Days of analytics history for Acme (volume scales with --clicks).",
        )

    def handle(self, *args, json=None, clicks=400, history_days=365, **options):
        from referral_platform.celery import app

        # Tasks queued by the services (reward evaluation, participant messages) run in-process when the
        # demo commits, so the demo is complete without a worker (they find the work already done).
        eager = app.conf.task_always_eager
        app.conf.task_always_eager = True
        try:
            # The demo's people have made-up addresses: their messages are recorded (dashboards show
            # them) but not e-mailed.
            with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
                self._handle(json=json, clicks=clicks, history_days=history_days)
        finally:
            app.conf.task_always_eager = eager

    def _handle(self, *, json, clicks, history_days=365):
        random.seed(2026)
        with transaction.atomic():
            acme = self._workspace("acme", "Acme Analytics", ["acme.example", ".acme.example"], "owner@acme.example")
            self._member(acme, "marketer@acme.example", Role.MARKETER)
            self._member(acme, "viewer@acme.example", Role.VIEWER)
            globex = self._workspace("globex", "Globex", ["globex.example"], "owner@globex.example")
            self._superuser("admin@platform.example")
            for tenant in (acme, globex):
                self._programs(tenant, clicks if tenant is acme else clicks // 4)
                self._program_rules(tenant)
            for tenant in (acme, globex):
                self._conversions(tenant)
            self._rewards(acme)
            self._fraud_examples(acme)
            self._messages(acme, globex)
            partner_login = seed_partners(acme, self._user, self.stdout)
            demo_key = self._demo_key(acme)
        info = {
            "logins": [
                {"email": "owner@acme.example", "password": DEMO_PASSWORD, "role": "owner of Acme Analytics"},
                {"email": "marketer@acme.example", "password": DEMO_PASSWORD, "role": "marketer of Acme Analytics"},
                {"email": "viewer@acme.example", "password": DEMO_PASSWORD, "role": "viewer of Acme Analytics"},
                {"email": "owner@globex.example", "password": DEMO_PASSWORD, "role": "owner of Globex"},
                {"email": "admin@platform.example", "password": DEMO_PASSWORD, "role": "platform staff (all tenants)"},
                {"email": partner_login, "password": DEMO_PASSWORD, "role": "partner (ResellPro GmbH), /portal/"},
            ],
            "api_key": demo_key,
            "sample_link": "/r/" + ReferralLink.objects.for_tenant(acme).order_by("pk").first().code,
            "participant_dashboard": self._dashboard_path(acme),
        }
        self._analytics_history(acme, clicks=clicks, history_days=history_days)
        if json:
            with open(json, "w") as handle:
                handle.write(__import__("json").dumps(info, indent=2))
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        for login in info["logins"]:
            self.stdout.write(f"  {login['email']:<26} {login['password']}  ({login['role']})")
        self.stdout.write(f"  Partner portal: /portal/ (log in as {partner_login})")
        self.stdout.write(f"  API key (Acme Analytics): {demo_key}")
        self.stdout.write(f"  Dana's participant dashboard: {info['participant_dashboard']}")

    # --- analytics history (issue 10) ----------------------------------------------------------
    def _analytics_history(self, acme: Tenant, *, clicks: int, history_days: int) -> None:
        """A year of Acme history (growth, a rule change, seasonal dips), then every rollup rebuilt."""
        from analytics.rollups import rollups_rebuild
        from demo.analytics import seed_history

        if history_days > 0:
            with transaction.atomic():
                made = seed_history(
                    acme,
                    days=history_days,
                    scale=clicks / 400,
                    progress=lambda done, total: progress(done, total, "acme: analytics history"),
                )
            if not made.get("skipped"):
                self.stdout.write(
                    f"  history: {made['clicks']} clicks, {made['referrals']} referrals, {made['customers']} customers"
                )
        for tenant in Tenant.objects.filter(slug__in=["acme", "globex"]).order_by("pk"):
            rollups_rebuild(
                tenant_id=tenant.pk, progress=lambda done, total, s=tenant.slug: progress(done, total, f"{s}: rollups")
            )

    # --- pieces -----------------------------------------------------------------------------
    def _user(self, email: str, **extra):
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(username=email, defaults={"email": email, **extra})
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
            from allauth.account.models import EmailAddress

            EmailAddress.objects.get_or_create(user=user, email=email, defaults={"verified": True, "primary": True})
        return user

    def _workspace(self, slug, name, domains, owner_email) -> Tenant:
        # The platform's own host is allowed too: demo programs land on the hosted landing page (/join/).
        domains = [*domains, _site_host()]
        tenant, _ = Tenant.objects.get_or_create(
            slug=slug, defaults={"name": name, "allowed_landing_domains": domains, "default_currency": "USD"}
        )
        self._member(tenant, owner_email, Role.OWNER)
        return tenant

    def _member(self, tenant, email, role):
        Membership.objects.get_or_create(tenant=tenant, user=self._user(email), defaults={"role": role})

    def _superuser(self, email):
        self._user(email, is_superuser=True, is_staff=True)

    def _programs(self, tenant: Tenant, click_count: int) -> None:
        if Program.objects.for_tenant(tenant).exists():
            return
        actor = system_actor(tenant)
        customer = Program.objects.create(
            tenant=tenant,
            name=f"{tenant.name} customer referrals",
            slug="customers",
            kind=ProgramKind.CUSTOMER,
            status=ProgramStatus.ACTIVE,
            access=ProgramAccess.OPEN,
            landing_url=_hosted_landing_url(),
        )
        partner = Program.objects.create(
            tenant=tenant,
            name=f"{tenant.name} partner program",
            slug="partners",
            kind=ProgramKind.PARTNER,
            status=ProgramStatus.ACTIVE,
            access=ProgramAccess.GATED,
            landing_url=_hosted_landing_url(),
            attribution_model="position_based",
        )
        people = [(customer, row) for row in CUSTOMERS] + [(partner, row) for row in PARTNERS]
        participants = []
        for index, (program, (external_id, name, email, company)) in enumerate(people, start=1):
            if tenant.slug != "acme":
                email = email.replace(".example", f".{tenant.slug}.example")
            participants.append(
                participant_enroll(
                    tenant=tenant,
                    program=program,
                    external_id=external_id,
                    name=name,
                    email=email,
                    company=company,
                    actor=actor,
                )
            )
            progress(index, len(people), f"{tenant.slug}: participants")
        links = list(ReferralLink.objects.for_tenant(tenant).select_related("participant"))
        now = timezone.now()
        clicks = []
        for index in range(click_count):
            link = random.choice(links)
            user_agent = random.choice(USER_AGENTS)
            clicks.append(
                Click(
                    tenant=tenant,
                    link=link,
                    program_id=link.program_id,
                    participant_id=link.participant_id,
                    stream_id=f"seed-{index}",
                    visitor_id=f"v{random.randrange(10**8):08d}",
                    ip=f"203.0.113.{random.randrange(1, 255)}",
                    user_agent=user_agent,
                    referer=random.choice(["", "https://www.linkedin.com/", "https://mail.example/"]),
                    channel=link.channel,
                    utm={"utm_source": link.channel},
                    is_bot="bot" in user_agent.lower(),
                    occurred_at=now - timedelta(minutes=random.randrange(60 * 24 * 60)),
                )
            )
            if (index + 1) % 50 == 0 or index + 1 == click_count:
                progress(index + 1, click_count, f"{tenant.slug}: clicks")
        Click.objects.bulk_create(clicks, batch_size=1000)
        for referred_email, company, status in REFERRED:
            referrer = random.choice(participants)
            if tenant.slug != "acme":
                referred_email = referred_email.replace(".example", f".{tenant.slug}.example")
            started = now - timedelta(days=random.randrange(5, 50))
            referral = Referral(
                tenant=tenant,
                program=referrer.program,
                referrer=referrer,
                link=ReferralLink.objects.for_tenant(tenant).filter(participant=referrer).first(),
                referred_email=referred_email,
                referred_company=company,
                status=status,
                visitor_id=f"v{random.randrange(10**8):08d}",
                rule_version=program_current_version(program=referrer.program),
            )
            reached = [s for s in STAGES]
            if status == ReferralStatus.REJECTED:
                reached = STAGES[:2]
                referral.rejected_at = started + timedelta(days=3)
            else:
                reached = STAGES[: [s for s, _ in STAGES].index(status) + 1]
            for offset, (_, field) in enumerate(reached):
                setattr(referral, field, started + timedelta(days=offset * 4))
            referral.save()

    def _conversions(self, tenant: Tenant) -> None:
        """Sign-ups, a partner lead and conversion events with their attributions, through the real
        services: a single-touch payment, a multi-touch journey across two devices (position based:
        40/20/40 over three partners), a qualified lead and a refused foreign-currency event."""
        from referrals.models import Attribution, ConversionEvent
        from referrals.services import (
            conversion_event_process,
            conversion_event_receive,
            lead_submit,
            signup_record,
        )

        if ConversionEvent.objects.for_tenant(tenant).filter(external_event_id__startswith="seed_").exists():
            return
        actor = system_actor(tenant)
        now = timezone.now().replace(microsecond=0)
        domain = "example" if tenant.slug == "acme" else f"{tenant.slug}.example"

        def person(external_id: str):
            return Participant.objects.for_tenant(tenant).get(external_id=external_id)

        def link_of(participant, channel="direct"):
            return ReferralLink.objects.for_tenant(tenant).get(participant=participant, channel=channel)

        def seed_click(participant, visitor_id, days_ago, channel="direct"):
            link = link_of(participant, channel)
            Click.objects.create(
                tenant=tenant,
                link=link,
                program_id=link.program_id,
                participant=participant,
                stream_id=f"sd-{visitor_id[-12:]}-{link.code}",
                visitor_id=visitor_id,
                ip="198.51.100.7",
                user_agent=USER_AGENTS[0],
                channel=link.channel,
                utm={"utm_source": link.channel},
                occurred_at=now - timedelta(days=days_ago),
            )

        def event(external_event_id, kind, days_ago, amount_minor=0, currency="USD", **identity):
            data = {
                "external_event_id": external_event_id,
                "kind": kind,
                "amount_minor": amount_minor,
                "currency": currency,
                "occurred_at": now - timedelta(days=days_ago),
                **identity,
            }
            raw = {key: value.isoformat() if hasattr(value, "isoformat") else value for key, value in data.items()}
            received = conversion_event_receive(tenant=tenant, raw=raw, queue_processing=False, **data)
            return conversion_event_process(event_id=received.event.pk)

        steps = 6
        # 1. Single touch: Dana's e-mail link → sign-up → first payment.
        dana = person("cus_1001")
        seed_click(dana, "demo-orbit-laptop", 12, channel="email")
        signup_record(
            tenant=tenant,
            actor=actor,
            email=f"cto@orbitlabs.{domain}",
            visitor_id="demo-orbit-laptop",
            customer_external_id="acct_orbit",
            company="Orbit Labs",
            company_size="51-200",
            how_did_you_hear="Dana at Northwind told me",
            occurred_at=now - timedelta(days=11),
        )
        event("seed_pay_orbit_1", "payment", 8, 49_900, customer_external_id="acct_orbit")
        progress(1, steps, f"{tenant.slug}: conversions")
        # 2. Multi-touch across devices in the partner program (position based): the phone clicked two
        # partners' links before the sign-up on the laptop, and is tied to the customer by the payment.
        priya, marco, nina = person("ptn_01"), person("ptn_02"), person("ptn_03")
        seed_click(priya, "demo-quanta-laptop", 25)
        seed_click(marco, "demo-quanta-phone", 23, channel="social")
        seed_click(nina, "demo-quanta-phone", 21, channel="social")
        signup_record(
            tenant=tenant,
            actor=actor,
            email=f"ops@quantaflow.{domain}",
            visitor_id="demo-quanta-laptop",
            customer_external_id="acct_quanta",
            company="QuantaFlow",
            company_size="201-1000",
            how_did_you_hear="Podcast ad",
            occurred_at=now - timedelta(days=20),
        )
        progress(2, steps, f"{tenant.slug}: conversions")
        event(
            "seed_pay_quanta_1",
            "payment",
            2,
            240_000,
            customer_external_id="acct_quanta",
            visitor_id="demo-quanta-phone",  # the phone is linked to the customer here
        )
        progress(3, steps, f"{tenant.slug}: conversions")
        # 3. A partner lead with qualifying information, then qualified by the sales team.
        lead_submit(
            tenant=tenant,
            actor=actor,
            participant=marco,
            name="Ida Berg",
            email=f"it@brightpath.{domain}",
            company="BrightPath",
            company_size="11-50",
            budget="About $20k a year",
            authority="Ida (Head of IT) decides",
            need="Partner portal for 40 resellers",
            timeline="This quarter",
            occurred_at=now - timedelta(days=6),
        )
        event("seed_qualified_brightpath", "qualified", 3, email=f"it@brightpath.{domain}")
        progress(4, steps, f"{tenant.slug}: conversions")
        # 4. A second payment of the first customer, and one in a foreign currency (refused, kept).
        event("seed_pay_orbit_2", "payment", 1, 49_900, customer_external_id="acct_orbit")
        event("seed_pay_orbit_eur", "payment", 1, 45_000, currency="EUR", customer_external_id="acct_orbit")
        progress(5, steps, f"{tenant.slug}: conversions")
        rows = Attribution.objects.for_tenant(tenant).count()
        progress(steps, steps, f"{tenant.slug}: conversions")
        self.stdout.write(f"  {tenant.slug}: 5 conversion events, {rows} attribution rows")

    def _rewards(self, tenant: Tenant) -> None:
        """Rewards from the real evaluation of the demo conversions, then moved through every state; the
        other workspace's conversions are evaluated too."""
        from demo.rewards import demo_conversions_evaluate, seed_rewards

        created = seed_rewards(tenant)
        if created:
            self.stdout.write(
                f"  {tenant.slug}: {created} rewards from evaluated conversions "
                "(every state, a review, a paid payout, a clawback)"
            )
        for other in Tenant.objects.filter(slug="globex"):
            demo_conversions_evaluate(other)

    def _messages(self, *tenants: Tenant) -> None:
        """Every demo referral's stage messages, now (the queued tasks then find them sent)."""
        from demo.rewards import demo_messages_send

        for tenant in tenants:
            demo_messages_send(tenant)

    def _dashboard_path(self, tenant: Tenant) -> str:
        """A demo participant's signed dashboard link: Dana, who has a referral, rewards and messages."""
        from programs.dashboard_links import dashboard_path

        dana = Participant.objects.for_tenant(tenant).filter(external_id="cus_1001").first()
        return dashboard_path(dana) if dana else ""

    def _fraud_examples(self, tenant: Tenant) -> None:
        """Two sign-ups that fraud screening flags, reported through the real sign-up service (which
        screens every referral it creates), so the review queue has something to show. Idempotent."""
        from referrals.services import signup_record

        for program in Program.objects.for_tenant(tenant):
            fraud_policy_get_or_create(program=program)
        program = Program.objects.for_tenant(tenant).get(slug="customers")
        now = timezone.now()
        for index, (external_id, email, company, _why) in enumerate(FRAUD_EXAMPLES, start=1):
            if not Referral.objects.for_tenant(tenant).filter(referred_email__iexact=email).exists():
                referrer = Participant.objects.for_tenant(tenant).get(program=program, external_id=external_id)
                signup_record(
                    tenant=tenant,
                    actor=system_actor(tenant),
                    email=email,
                    referral_code=ReferralLink.objects.for_tenant(tenant)
                    .get(participant=referrer, channel="direct")
                    .code,
                    visitor_id=f"v-fraud-demo-{index}",
                    company=company,
                    occurred_at=now - timedelta(hours=index),
                )
            progress(index, len(FRAUD_EXAMPLES), f"{tenant.slug}: fraud review examples")

    def _demo_key(self, tenant: Tenant) -> str:
        actor = system_actor(tenant)
        for old in ApiKey.objects.for_tenant(tenant).filter(name=DEMO_KEY_NAME, revoked_at__isnull=True):
            api_key_revoke(api_key=old, actor=actor)
        return api_key_create(tenant=tenant, name=DEMO_KEY_NAME, actor=actor).raw_key

    # --- program rules: two versions of double-sided rewards per demo program ------------------
    def _program_rules(self, tenant: Tenant) -> None:
        """Launch rules, then richer ones, for each demo program (idempotent); the demo referrals made
        before are spread over the two versions, so the rule-change preview has history to replay."""
        from programs.models import ParticipantStatus
        from programs.rules import RulesError, has_rewards
        from programs.services import participant_approve, program_current_version, program_rules_change

        actor = system_actor(tenant)
        currency = tenant.default_currency
        # The demo partners applied to the gated partner program and were vetted.
        for pending in Participant.objects.for_tenant(tenant).filter(status=ParticipantStatus.PENDING):
            participant_approve(participant=pending, actor=actor, reason="Vetted partner (demo data)")
        for program in Program.objects.for_tenant(tenant).filter(slug__in=DEMO_RULES):
            current = program_current_version(program=program)
            try:
                if has_rewards(current.rules):
                    continue
            except RulesError:
                pass
            launch, (richer, note) = DEMO_RULES[program.slug](currency)
            first = program_rules_change(program=program, actor=actor, rules=launch, note="Launch rules").version
            second = program_rules_change(program=program, actor=actor, rules=richer, note=note).version
            referrals = list(Referral.objects.for_tenant(tenant).filter(program=program).order_by("created_at", "pk"))
            for index, referral in enumerate(referrals):
                referral.rule_version = first if index < len(referrals) // 2 else second
                referral.save(update_fields=["rule_version"])


def _customer_rules(currency: str) -> tuple[dict, tuple[dict, str]]:
    base = {
        "schema_version": 1,
        "currency": currency,
        "caps": {"referrer_rewarded_referrals": {"max": 12, "period": "year"}, "max_bill_discount_bp": 10_000},
        "eligibility": {"industries": [], "company_size": {"min": 5, "max": 5_000}},
        "qualification": {"budget": False, "authority": True, "need": True, "timeline": False},
        "cancellation": {"policy": "clawback", "within_days": 60},
    }
    launch = {
        **base,
        "referrer": [{"kind": "flat_per_conversion", "amount_minor": 5_000}],
        "referred": [{"kind": "renewal_discount", "percent_bp": 2_000}],
    }
    richer = {
        **base,
        "referrer": [
            {
                "kind": "tiered",
                "tiers": [
                    {"min_referrals": 1, "amount_minor": 5_000},
                    {"min_referrals": 4, "amount_minor": 7_500},
                    {"min_referrals": 8, "amount_minor": 10_000},
                ],
            },
            {"kind": "gift", "gift": "Acme hoodie", "value_minor": 3_500, "on": "qualified"},
        ],
        "referred": [
            {"kind": "free_months", "months": 1},
            {"kind": "feature_unlock", "feature": "SSO", "months": 6},
        ],
    }
    return launch, (richer, "Tiered rewards and a free month for the referred company")


def _partner_rules(currency: str) -> tuple[dict, tuple[dict, str]]:
    base = {
        "schema_version": 1,
        "currency": currency,
        "caps": {"referrer_rewarded_referrals": None, "max_bill_discount_bp": 10_000},
        "eligibility": {
            "industries": ["software", "fintech", "healthcare", "retail", "logistics", "education", "banking"],
            "company_size": {"min": 20},
            "annual_revenue_minor": {"min": 100_000_000},
        },
        "qualification": {"budget": True, "authority": True, "need": True, "timeline": True},
        "cancellation": {"policy": "forfeit_unpaid", "within_days": 90},
    }
    launch = {
        **base,
        "referrer": [{"kind": "percent_of_revenue", "percent_bp": 1_500, "max_amount_minor": 500_000}],
        "referred": [{"kind": "account_credit", "amount_minor": 2_000, "per_seat": True, "max_seats": 50}],
    }
    recurring = {
        **base,
        "referrer": [
            {"kind": "flat_per_lead", "amount_minor": 2_500},
            {"kind": "recurring_percent", "percent_bp": 2_000, "months": 12, "max_amount_minor": 250_000},
        ],
        "referred": [{"kind": "renewal_discount", "percent_bp": 1_000}],
    }
    return launch, (recurring, "First-year revenue share (20 % for 12 months) plus a bounty per qualified lead")


DEMO_RULES = {"customers": _customer_rules, "partners": _partner_rules}


def _site_host() -> str:
    from urllib.parse import urlsplit

    from django.conf import settings

    return urlsplit(settings.SITE_URL).hostname or "127.0.0.1"


def _hosted_landing_url() -> str:
    """The platform's hosted landing page: a demo link (/r/<code>) lands on a page that exists."""
    from django.conf import settings

    return f"{settings.SITE_URL}/join/"
