"""The isolation harness's table: for every URL pattern, how to prove tenant B cannot reach tenant A.

tests/test_isolation.py enumerates every URL pattern of the project and fails when a pattern has no
entry here, so a new route cannot land without an isolation case. Admin pages are covered model by
model (ADMIN_FACTORIES): every tenant-owned model registered in the admin needs a factory.

Kinds of entry:
- ``Detail(make)``: ``make(world)`` creates tenant A's object and returns the URL kwargs. Tenant A's
  actor must get 200; tenant B's actor (API key, or marketer session) must get 404/403 for every
  method listed, and the object must be unchanged.
- ``Listing(make)``: ``make(world)`` creates tenant A's rows and returns a marker string that A's
  response contains; B's response must not contain it.
- ``NoTenantData(reason)``: the route shows no tenant data (or only the requester's own), with why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.utils import timezone

from analytics.models import OtherChannelCustomer
from partners import models as partner_models
from programs.models import Participant, ParticipantImport, Program, ProgramVersion
from referral_platform.tenancy.models import ApiKey, AuditEvent, Invitation, Membership, Tenant
from referrals.models import (
    Attribution,
    Click,
    ConversionEvent,
    FraudFlag,
    FraudPolicy,
    FraudReview,
    IdentityLink,
    Referral,
    ReferralLink,
    Touchpoint,
)
from rewards.models import (
    LedgerAccount,
    LedgerTransaction,
    ParticipantMessage,
    ParticipantStripeProfile,
    Payout,
    PayoutSettings,
    Reward,
    RewardEvaluation,
    StripeCredentials,
    StripeWebhookEvent,
)

from . import factories as f


@dataclass(frozen=True)
class Detail:
    make: Callable
    via: str = "api"  # "api" (Bearer key) or "session" (logged-in marketer)
    methods: tuple[str, ...] = ("GET",)
    payload: dict = field(default_factory=dict)
    # A POST-only action (program activate, participant approve …): tenant A's actor is shown to reach it
    # with methods[0] after tenant B's attempts (200, or 409 when its status does not allow the move).
    action: bool = False


@dataclass(frozen=True)
class Listing:
    make: Callable
    via: str = "api"
    query: str = ""  # appended to the URL (e.g. "?domain=acme.io")


@dataclass(frozen=True)
class PartnerPage:
    """A page of the partner portal, reached by a logged-in partner user.

    ``make(world, people)`` creates partner A1's object and returns ``{"kwargs": url kwargs, "marker": text
    only A1's page shows (None for files and images), "query": "" }``. The harness (tests/test_isolation.py)
    checks that A1 opens it (``methods[0]`` with ``payload``: 200, or 302 after a write); that A2 (another
    partner of the same tenant) and B1 (a partner of tenant B) get 404 for every method on an object page
    (``detail``) or never see the marker on a list page; that a marketer of tenant A gets 404 and a visitor
    is sent to log in.
    """

    make: Callable
    detail: bool = False
    methods: tuple[str, ...] = ("GET",)
    payload: dict = field(default_factory=dict)


@dataclass(frozen=True)
class NoTenantData:
    reason: str


@dataclass(frozen=True)
class SignedLink:
    """A page reached through a participant's signed link instead of a login or key.

    ``make(world)`` returns ``{"a": url kwargs of tenant A's participant, "b": those of tenant B's,
    "marker": text only A's page shows (None for images)}``. The harness checks that A's link opens A's
    page, B's link never shows A's marker, and that a tampered token or a token naming another tenant
    answers 404.
    """

    make: Callable


def _program(world):
    return {"pk": f.ProgramFactory(tenant=world.a).pk}


def _program_listing(world):
    return f.ProgramFactory(tenant=world.a, name="Secret program of A").name


def _participant(world):
    return {"pk": f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)).pk}


def _participant_listing(world):
    return f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a), email="only-a@a-corp.example").email


def _referral(world):
    return {"pk": f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))).pk}


def _referral_listing(world):
    program = f.ProgramFactory(tenant=world.a)
    return f.ReferralFactory(
        referrer=f.ParticipantFactory(program=program), referred_email="lead@a-only.example"
    ).referred_email


def _conversion(world):
    return {"pk": f.ConversionEventFactory(tenant=world.a).pk}


def _conversion_listing(world):
    return f.ConversionEventFactory(tenant=world.a, external_event_id="evt_only_in_tenant_a_7731").external_event_id


def _attribution(world):
    return {"pk": f.AttributionFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))).pk}


def _attribution_listing(world):
    participant = f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a), name="Credited only in A qz81")
    f.AttributionFactory(participant=participant)
    return participant.name


def _flagged_referral(world):
    program = f.ProgramFactory(tenant=world.a)
    return f.FraudFlagFactory(referral__referrer=f.ParticipantFactory(program=program)).referral


def _referral_fraud(world):
    return {"pk": _flagged_referral(world).pk}


def _program_with_rules(world):
    return {"pk": f.ProgramVersionFactory(program=f.ProgramFactory(tenant=world.a)).program_id}


def _enrolled_participant(world):
    from programs.services import participant_enroll
    from referral_platform.tenancy.actors import system_actor

    program = f.ProgramFactory(tenant=world.a)
    participant = participant_enroll(
        tenant=world.a,
        program=program,
        external_id="iso-1",
        name="Isolated Ann",
        email="ann@a-corp.example",
        actor=system_actor(world.a),
    )
    return {"pk": participant.pk}


def _reward(world):
    return {"pk": f.RewardFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))).pk}


def _reward_listing(world):
    return f.RewardFactory(
        participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)),
        explanation_text="Only tenant A's reward rw7731",
    ).explanation_text


def _reward_evaluation_listing(world):
    return f.RewardEvaluationFactory(
        conversion_event=f.ConversionEventFactory(tenant=world.a), notes=["Only tenant A's evaluation ev5512"]
    ).notes[0]


def _dashboard_participants(world, marker: str):
    from programs.dashboard_links import dashboard_token
    from programs.services import participant_enroll
    from referral_platform.tenancy.actors import system_actor

    people = {}
    for side, tenant in (("a", world.a), ("b", world.b)):
        people[side] = participant_enroll(
            tenant=tenant,
            program=f.ProgramFactory(tenant=tenant),
            external_id=f"dash-{side}",
            name=marker if side == "a" else "Bea of tenant B",
            email=f"dash-{side}@{tenant.slug}.example",
            actor=system_actor(tenant),
        )
    return {side: {"token": dashboard_token(person)} for side, person in people.items()} | {"people": people}


def _dashboard(world):
    return {**_dashboard_participants(world, "Dashboard Ann dq4410"), "marker": "Dashboard Ann dq4410"}


def _dashboard_qr(world):
    return {**_dashboard_participants(world, "QR Ann"), "marker": None}


def _valid_rules_payload():
    from programs.rules import example_rules

    return {"rules": example_rules("USD")}


# --- partners -----------------------------------------------------------------------------------


class PartnerPeople:
    """Partners A1 and A2 of tenant A (one program) and B1 of tenant B, each with a portal login."""

    def __init__(self, world):
        from partners.models import PartnerRole, PartnerUser
        from partners.services import partner_create, partner_enrol
        from referral_platform.tenancy.actors import system_actor

        def partner(tenant, program, name):
            actor = system_actor(tenant)
            made = partner_create(tenant=tenant, actor=actor, name=name, partner_type="reseller")
            email = f"{name.replace(' ', '-').lower()}@{tenant.slug}-partners.example"
            participant = partner_enrol(partner=made, program=program, actor=actor, email=email).participant
            user = f.UserFactory(username=email, email=email)
            PartnerUser.objects.create(tenant=tenant, partner=made, user=user, role=PartnerRole.ADMIN)
            return made, user, participant

        self.program_a = f.ProgramFactory(tenant=world.a, kind="partner", name="Partner program of A")
        self.program_b = f.ProgramFactory(tenant=world.b, kind="partner", name="Partner program of B")
        self.a1, self.a1_user, self.a1_participant = partner(world.a, self.program_a, "Alpha One Partners")
        self.a2, self.a2_user, self.a2_participant = partner(world.a, self.program_a, "Alpha Two Partners")
        self.b1, self.b1_user, self.b1_participant = partner(world.b, self.program_b, "Beta One Partners")


def _a1_deal(world, people, company="Marker Deal Co dl5521"):
    from partners.services import deal_register

    return deal_register(
        tenant=world.a, partner=people.a1, program=people.program_a, company_name=company,
        domain="marker-deal-dl5521.com", actor="isolation",
    )  # fmt: skip


def _portal_deal(world, people):
    deal = _a1_deal(world, people)
    return {"kwargs": {"pk": deal.pk}, "marker": deal.company_name}


def _portal_deal_list(world, people):
    return {"kwargs": {}, "marker": _a1_deal(world, people).company_name}


def _portal_lead_list(world, people):
    from referrals.services import lead_submit

    lead_submit(
        tenant=world.a, actor="isolation", participant=people.a1_participant, name="Lee",
        email="lee@marker-lead-ld7731.com", company="Marker Lead Co ld7731",
    )  # fmt: skip
    return {"kwargs": {}, "marker": "Marker Lead Co ld7731"}


def _a1_reward(world, people):
    from referral_platform.tenancy.actors import system_actor
    from rewards.services import reward_create

    return reward_create(
        tenant=world.a, program=people.program_a, participant=people.a1_participant, amount_minor=12_345,
        source_key="isolation:statement", actor=system_actor(world.a), description="Statement marker st7731",
    )  # fmt: skip


def _period_now():
    from django.utils import timezone

    return timezone.now().strftime("%Y-%m")


def _portal_statement_list(world, people):
    _a1_reward(world, people)
    return {"kwargs": {}, "marker": "Statement marker st7731"}


def _portal_statement_file(world, people):
    _a1_reward(world, people)
    return {
        "kwargs": {"participant_id": people.a1_participant.pk, "period": _period_now()},
        "marker": "Statement marker st7731",
    }


def _portal_statement_csv(world, people):
    return {**_portal_statement_file(world, people), "marker": "12345"}


def _gold_resource(world, people):
    from partners.models import PartnerTier, Resource

    gold = PartnerTier.objects.create(tenant=world.a, slug="gold", name="Gold", rank=2)
    people.a1.tier = gold
    people.a1.save(update_fields=["tier"])
    return Resource.objects.create(
        tenant=world.a, title="Gold-only deck rz1177", category="deck", url="https://files.example/gold", min_tier=gold
    )


def _portal_resource_list(world, people):
    return {"kwargs": {}, "marker": _gold_resource(world, people).title}


def _portal_resource_download(world, people):
    return {"kwargs": {"pk": _gold_resource(world, people).pk}, "marker": None}


def _a1_ticket(world, people):
    from partners.services import ticket_open

    return ticket_open(partner=people.a1, subject="Marker ticket tk4410", body="Hello", actor="isolation")


def _portal_ticket_list(world, people):
    return {"kwargs": {}, "marker": _a1_ticket(world, people).subject}


def _portal_ticket(world, people):
    ticket = _a1_ticket(world, people)
    return {"kwargs": {"pk": ticket.pk}, "marker": ticket.subject}


def _portal_qr(world, people):
    return {"kwargs": {"participant_id": people.a1_participant.pk}, "marker": None}


def _portal_links(world, people):
    return {"kwargs": {}, "marker": people.a1_participant.coupon_code}


def _portal_own_name(world, people):
    return {"kwargs": {}, "marker": people.a1.name}


def _portal_team(world, people):
    return {"kwargs": {}, "marker": people.a1_user.email}


def _portal_payouts(world, people):
    return {"kwargs": {}, "marker": f'value="{people.a1_participant.pk}"'}


def _api_deal(world):
    from partners.models import DealStatus

    return {"pk": f.DealRegistrationFactory(partner=f.PartnerFactory(tenant=world.a), status=DealStatus.APPROVED).pk}


def _api_deal_listing(world):
    return f.DealRegistrationFactory(
        partner=f.PartnerFactory(tenant=world.a), company_name="Deal only in A dz8812"
    ).company_name


def _api_partner(world):
    return {"pk": f.PartnerFactory(tenant=world.a).pk}


def _api_partner_listing(world):
    return f.PartnerFactory(tenant=world.a, name="Partner only in A pz4471").name


def _api_conflict_listing(world):
    conflict = f.DealConflictFactory(holder=f.DealRegistrationFactory(partner=f.PartnerFactory(tenant=world.a)))
    return conflict.holder.reference


def _api_lookup_listing(world):
    f.DealRegistrationFactory(
        partner=f.PartnerFactory(tenant=world.a, name="Lookup partner lk5530"),
        domain="lookup-only-a.com",
        domain_stem="lookup-only-a",
    )
    return "Lookup partner lk5530"


# --- analytics (issue 10) ---------------------------------------------------------------------------
# Every analytics page and CSV shows the session's workspace name (the CSV's first line names it) and
# figures from its rollups only; A's marker is a participant of A with rollups, shown on the pages and
# CSVs that list participants, else A's workspace name. The figures themselves are checked tenant by
# tenant in analytics/tests/test_analytics_isolation.py (B sees zeros and "—", never A's numbers).
def _analytics_marker(world):
    from analytics.rollups import rollups_rebuild

    program = f.ProgramFactory(tenant=world.a, kind="customer")
    participant = f.ParticipantFactory(program=program, name="Analytics Marker zq81")
    f.ClickFactory(link=f.ReferralLinkFactory(participant=participant), occurred_at=timezone.now())
    f.ReferralFactory(referrer=participant, created_at=timezone.now())
    rollups_rebuild(tenant_id=world.a.pk)
    return participant


def _analytics_page(shows_participants: bool):
    def make(world):
        participant = _analytics_marker(world)
        return participant.name if shows_participants else world.a.name

    return make


ANALYTICS_PAGES_WITH_PARTICIPANTS = {"overview", "leaderboards"}
ANALYTICS_ROUTES: dict[str, object] = {"analytics_calculator": Listing(_analytics_page(False), via="session")}
for _slug in ("overview", "health", "funnel", "channels", "economics", "series", "leaderboards", "compare"):
    _with_people = _slug in ANALYTICS_PAGES_WITH_PARTICIPANTS
    ANALYTICS_ROUTES[f"analytics_{_slug}"] = Listing(_analytics_page(_with_people), via="session")
    ANALYTICS_ROUTES[f"analytics_{_slug}_csv"] = Listing(
        _analytics_page(_with_people),
        via="session",
        query="?figure=top_referrers"
        if _slug == "overview"
        else "?figure=referrers"
        if _slug == "leaderboards"
        else "",
    )


def _other_customer_listing(world):
    return f.OtherChannelCustomerFactory(tenant=world.a, external_id="other-only-a-77").external_id


ROUTES: dict[str, object] = {
    **ANALYTICS_ROUTES,
    "api:analytics-other-customer-list": Listing(_other_customer_listing),
    # the browser upload of the same rows lists the workspace's latest ones (issue 10)
    "analytics_other_customers": Listing(_other_customer_listing, via="session"),
    # --- API ---------------------------------------------------------------------------------
    "api:me": NoTenantData("answers with the caller's own tenant only (tests/test_api_auth.py)"),
    "api:program-list": Listing(_program_listing),
    "api:program-detail": Detail(_program),
    "api:program-activate": Detail(_program_with_rules, methods=("POST",), action=True),
    "api:program-pause": Detail(_program_with_rules, methods=("POST",), action=True),
    "api:program-archive": Detail(_program_with_rules, methods=("POST",), action=True),
    "api:participant-list": Listing(_participant_listing),
    "api:participant-approve": Detail(_participant, methods=("POST",), action=True),
    "api:participant-reject": Detail(_participant, methods=("POST",), action=True),
    "api:participant-remove": Detail(_participant, methods=("POST",), action=True),
    "api:participant-detail": Detail(_participant),
    "api:referral-list": Listing(_referral_listing),
    "api:referral-detail": Detail(_referral),
    "api:signup-create": NoTenantData(
        "write-only; another tenant's code is unknown and nothing is written: "
        "referrals/tests/test_tenant_isolation.py::test_tenant_b_cannot_sign_up_with_tenant_a_code"
    ),
    "api:lead-create": NoTenantData(
        "write-only; another tenant's participant id is unknown: "
        "referrals/tests/test_tenant_isolation.py::test_tenant_b_cannot_submit_a_lead_for_tenant_a_participant"
    ),
    "api:conversion-list": Listing(_conversion_listing),
    "api:conversion-detail": Detail(_conversion),
    "api:attribution-list": Listing(_attribution_listing),
    "api:attribution-detail": Detail(_attribution),
    "api:participant-stripe-onboarding": Detail(_participant, methods=("GET", "POST")),
    "api:referral-fraud": Detail(
        _referral_fraud, methods=("GET", "POST"), payload={"decision": "clear", "reason": "B clears A's flag"}
    ),
    "api:program-rules": Detail(_program_with_rules, methods=("GET", "PUT"), payload=_valid_rules_payload()),
    "api:program-rules-preview": Detail(_program_with_rules, methods=("GET", "POST"), payload=_valid_rules_payload()),
    "api:program-terms": Detail(_program_with_rules),
    "api:reward-list": Listing(_reward_listing),
    "api:reward-detail": Detail(_reward),
    "api:reward-evaluation-list": Listing(_reward_evaluation_listing),
    "participant_dashboard": SignedLink(_dashboard),
    "participant_dashboard_qr": SignedLink(_dashboard_qr),
    "api:participant-links": Detail(_enrolled_participant),
    "api:participant-links-qr": Detail(_enrolled_participant),
    "api-schema": NoTenantData("the OpenAPI document describes routes, holds no rows"),
    "api-docs": NoTenantData("static Swagger UI"),
    "api:account-lookup": Listing(_api_lookup_listing, query="?domain=lookup-only-a.com"),
    "api:deal-list": Listing(_api_deal_listing),
    "api:deal-detail": Detail(_api_deal, methods=("GET", "PATCH"), payload={"stage": "lost"}),
    "api:partner-list": Listing(_api_partner_listing),
    "api:partner-detail": Detail(_api_partner),
    "api:deal-conflict-list": Listing(_api_conflict_listing),
    # --- the partner portal ------------------------------------------------------------------
    "portal_home": PartnerPage(_portal_deal_list),
    "portal_links": PartnerPage(_portal_links),
    "portal_link_qr": PartnerPage(_portal_qr, detail=True),
    "portal_deals": PartnerPage(_portal_deal_list),
    "portal_deal_detail": PartnerPage(_portal_deal, detail=True),
    "portal_deal_extend": PartnerPage(
        _portal_deal, detail=True, methods=("POST",), payload={"days": "10", "reason": "progressing"}
    ),
    "portal_leads": PartnerPage(_portal_lead_list),
    "portal_statements": PartnerPage(_portal_statement_list),
    "portal_statement_csv": PartnerPage(_portal_statement_csv, detail=True),
    "portal_statement_print": PartnerPage(_portal_statement_file, detail=True),
    "portal_resources": PartnerPage(_portal_resource_list),
    "portal_resource_download": PartnerPage(_portal_resource_download, detail=True),
    "portal_tickets": PartnerPage(_portal_ticket_list),
    "portal_ticket_detail": PartnerPage(_portal_ticket, detail=True, methods=("GET", "POST"), payload={"body": "x"}),
    "portal_profile": PartnerPage(_portal_own_name),
    "portal_team": PartnerPage(_portal_team),
    "portal_payouts": PartnerPage(_portal_payouts),
    "portal_invitation": NoTenantData(
        "reached by an unguessable one-time token (only its hash is stored), for its e-mail only: "
        "partners/tests/test_partners_and_tiers.py::test_an_invitation_works_once_for_its_email_and_makes_a_partner_user"
    ),
    "partner_apply": NoTenantData(
        "public, tenant-branded application form of an active partner program addressed by tenant + program slug; "
        "shows no rows: partners/tests/test_applications_page.py"
    ),
    # --- pages -------------------------------------------------------------------------------
    "home": Listing(_analytics_page(True), via="session"),  # the analytics home (issue 10)
    "health": NoTenantData("component status, no tenant rows"),
    "favicon": NoTenantData("a redirect to the static icon"),
    "api_not_found": NoTenantData(
        "any unknown /api/v1/ path: the API's JSON 404, reads nothing; tests/test_api_auth.py::"
        "test_unknown_api_route_is_json_404"
    ),
    "onboarding": NoTenantData(
        "the session tenant's own checklist only; tests/test_onboarding.py::test_the_checklist_is_the_sessions_own"
    ),
    "workspace_members": NoTenantData(
        "lists the session tenant's members only; covered by tests/test_workspace.py::test_members_page_*"
    ),
    "tenant_switch": NoTenantData(
        "switches only among the user's own memberships; tests/test_workspace.py::test_cannot_switch_*"
    ),
    "referral_landing_hosted": NoTenantData(
        "only redirects to the referral code's own landing page (tests/test_hosted_landing.py)"
    ),
    "referral_landing": NoTenantData(
        "public page reached by an unguessable referral code; shows only that link's referrer, and the tenant "
        "comes from the link: referrals/tests/test_landing_page.py"
    ),
    "stripe_webhook": NoTenantData(
        "POST-only, answers no tenant data; verified with the addressed tenant's own signing secret: "
        "rewards/tests/test_webhooks.py::test_an_event_signed_for_tenant_a_is_refused_on_tenant_bs_endpoint"
    ),
    "program_terms_page": NoTenantData(
        "public by design: a published (active/paused) program's terms, addressed by tenant slug + program slug; "
        "programs/tests/test_terms_and_rules_api.py checks draft/archived/mixed-tenant slugs answer 404"
    ),
    "program_apply_page": NoTenantData(
        "public application form of an active program, addressed by tenant slug + program slug; shows no rows; "
        "programs/tests/test_terms_and_rules_api.py checks invite-only/paused programs answer 404"
    ),
    "program_apply_confirm": NoTenantData(
        "the link of an applicant's confirmation e-mail: an unguessable token bound to one program; shows no rows; "
        "tests/test_abuse_limits.py::test_a_confirmation_link_only_works_on_its_own_program"
    ),
    "invitation_accept": NoTenantData(
        "reached by an unguessable one-time token; tests/test_workspace.py::test_invitation_*"
    ),
    "referral_redirect": NoTenantData(
        "public /r/<code>: answers a 302 to the code's own program (or a static 404 page), shows no rows; "
        "the code (72 random bits, unique across tenants) resolves the tenant. referrals/tests/test_redirect.py::"
        "test_tenant_a_code_never_lands_on_tenant_b_domains, test_each_tenant_code_lands_on_its_own_domain_*, "
        "test_referral_codes_are_unguessable_and_unique; flush: test_click_flush.py::test_clicks_of_two_tenants_*"
    ),
}

# allauth's pages act on the logged-in user's own account only.
NO_TENANT_DATA_PREFIXES = {
    "account_": "allauth account pages: the requester's own account only",
}

# One factory per tenant-owned model registered in the admin: builds tenant A's row.
ADMIN_FACTORIES: dict[type, Callable] = {
    Tenant: lambda world: world.a,
    Membership: lambda world: Membership.objects.get(tenant=world.a, user=world.owner_a),
    Invitation: lambda world: f.InvitationFactory(tenant=world.a),
    ApiKey: lambda world: ApiKey.objects.filter(tenant=world.a).first(),
    AuditEvent: lambda world: f.AuditEventFactory(tenant=world.a),
    Program: lambda world: f.ProgramFactory(tenant=world.a),
    Participant: lambda world: f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)),
    ReferralLink: lambda world: f.ReferralLinkFactory(
        participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    ),
    Click: lambda world: f.ClickFactory(
        link=f.ReferralLinkFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
    ),
    Referral: lambda world: f.ReferralFactory(referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))),
    ConversionEvent: lambda world: f.ConversionEventFactory(tenant=world.a),
    Attribution: lambda world: f.AttributionFactory(
        participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    ),
    Touchpoint: lambda world: f.TouchpointFactory(
        participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    ),
    IdentityLink: lambda world: f.IdentityLinkFactory(tenant=world.a),
    Reward: lambda world: f.RewardFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))),
    Payout: lambda world: f.PayoutFactory(participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))),
    LedgerTransaction: lambda world: LedgerTransaction.objects.get(
        reward=f.make_ledger_reward(f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a)))
    ),
    LedgerAccount: lambda world: LedgerAccount.objects.get(
        kind="pending",
        participant=f.make_ledger_reward(f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))).participant,
    ),
    StripeCredentials: lambda world: f.StripeCredentialsFactory(tenant=world.a),
    ParticipantStripeProfile: lambda world: f.ParticipantStripeProfileFactory(
        participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    ),
    PayoutSettings: lambda world: f.PayoutSettingsFactory(program=f.ProgramFactory(tenant=world.a)),
    StripeWebhookEvent: lambda world: f.StripeWebhookEventFactory(tenant=world.a),
    FraudReview: _flagged_referral,
    FraudFlag: lambda world: f.FraudFlagFactory(
        referral__referrer=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    ),
    FraudPolicy: lambda world: f.FraudPolicyFactory(program=f.ProgramFactory(tenant=world.a)),
    ProgramVersion: lambda world: f.ProgramVersionFactory(program=f.ProgramFactory(tenant=world.a)),
    ParticipantImport: lambda world: f.ParticipantImportFactory(program=f.ProgramFactory(tenant=world.a)),
    RewardEvaluation: lambda world: f.RewardEvaluationFactory(
        conversion_event=f.ConversionEventFactory(tenant=world.a)
    ),
    ParticipantMessage: lambda world: f.ParticipantMessageFactory(
        participant=f.ParticipantFactory(program=f.ProgramFactory(tenant=world.a))
    ),
    partner_models.PartnerTier: lambda world: f.PartnerTierFactory(tenant=world.a),
    partner_models.PartnerProgramSettings: lambda world: f.PartnerProgramSettingsFactory(
        program=f.ProgramFactory(tenant=world.a, kind="partner")
    ),
    partner_models.Partner: lambda world: f.PartnerFactory(tenant=world.a),
    partner_models.PartnerTierChange: lambda world: f.PartnerTierChangeFactory(
        partner=f.PartnerFactory(tenant=world.a)
    ),
    partner_models.PartnerInvitation: lambda world: f.PartnerInvitationFactory(
        partner=f.PartnerFactory(tenant=world.a)
    ),
    partner_models.PartnerApplication: lambda world: f.PartnerApplicationFactory(
        program=f.ProgramFactory(tenant=world.a, kind="partner")
    ),
    partner_models.DealRegistration: lambda world: f.DealRegistrationFactory(partner=f.PartnerFactory(tenant=world.a)),
    partner_models.DealConflict: lambda world: f.DealConflictFactory(
        holder=f.DealRegistrationFactory(partner=f.PartnerFactory(tenant=world.a))
    ),
    partner_models.Resource: lambda world: f.ResourceFactory(tenant=world.a),
    partner_models.SupportTicket: lambda world: f.SupportTicketFactory(partner=f.PartnerFactory(tenant=world.a)),
    # analytics (issue 10)
    OtherChannelCustomer: lambda world: f.OtherChannelCustomerFactory(tenant=world.a),
}


# --- engagement (docs/engagement.md) -------------------------------------------------------------


def _nps_moment(world, trigger="nps", marker="nps-only-in-a-np7731"):
    from engagement.models import Moment

    return Moment.objects.create(
        tenant=world.a, trigger=trigger, external_id=marker, customer_external_id="cust-a",
        email="a@a-corp.example", score=10 if trigger == "nps" else None, occurred_at="2026-11-01T10:00:00Z",
        outcome="asked",
    )  # fmt: skip


def _nps_listing(world):
    return _nps_moment(world).external_id


def _event_listing(world):
    return _nps_moment(world, trigger="renewal", marker="event-only-in-a-ev7731").external_id


def _nps_import(world):
    from engagement.models import NpsImport

    return {"pk": NpsImport.objects.create(tenant=world.a, filename="a.csv", content="x").pk}


def _nps_import_listing(world):
    from engagement.models import NpsImport

    return NpsImport.objects.create(tenant=world.a, filename="only-a-np5512.csv", content="x").filename


def _nps_report_listing(world):
    _nps_moment(world)
    return '"responses":1'


def _trigger_policy(world):
    from engagement.models import TriggerPolicy

    return TriggerPolicy.objects.create(tenant=world.a, program=f.ProgramFactory(tenant=world.a), trigger="nps")


def _trigger_policy_detail(world):
    return {"pk": _trigger_policy(world).pk}


def _trigger_policy_listing_marker(world):
    policy = _trigger_policy(world)
    policy.review_url = "https://reviews.example/only-a-tp4410"
    policy.save()
    return policy.review_url


def _program_template(world):
    return {"pk": f.ProgramFactory(tenant=world.a).pk, "kind": "launch"}


def _webhook_endpoint(world):
    from engagement.models import WebhookEndpoint

    return WebhookEndpoint.objects.create(
        tenant=world.a, url="https://crm.a-only.example/hook-wh7731", secret="whsec_" + "A" * 32
    )


def _webhook_endpoint_detail(world):
    return {"pk": _webhook_endpoint(world).pk}


def _webhook_endpoint_listing(world):
    return _webhook_endpoint(world).url


def _webhook_delivery(world):
    from engagement.models import WebhookDelivery, WebhookMessage

    message = WebhookMessage.objects.create(
        tenant=world.a, msg_id="msg_only_a_wd5512", event_type="referral.created", payload={}, dedupe_key="x"
    )
    return WebhookDelivery.objects.create(tenant=world.a, endpoint=_webhook_endpoint(world), message=message)


def _webhook_delivery_detail(world):
    return {"pk": _webhook_delivery(world).pk}


def _webhook_delivery_listing(world):
    return _webhook_delivery(world).message.msg_id


def _engagement_settings_listing(world):
    from engagement.models import EngagementSettings

    EngagementSettings.objects.create(tenant=world.a, time_zone="Pacific/Chatham")
    return "Pacific/Chatham"


ENGAGEMENT_ROUTES: dict[str, object] = {
    "api:engagement-settings": Listing(_engagement_settings_listing),
    "api:nps-response-list": Listing(_nps_listing),
    "api:event-list": Listing(_event_listing),
    "api:nps-import-list": Listing(_nps_import_listing),
    "api:nps-import-detail": Detail(_nps_import),
    "api:nps-report": Listing(_nps_report_listing),
    "api:trigger-policy-list": Listing(_trigger_policy_listing_marker),
    "api:trigger-policy-detail": Detail(
        _trigger_policy_detail, methods=("GET", "PUT"), payload={"trigger": "nps", "delay_minutes": 5}
    ),
    "api:message-template": Detail(_program_template, methods=("GET", "PUT"), payload={"subject": "B", "body": "B"}),
    "api:message-template-preview": Detail(_program_template, methods=("GET", "POST")),
    "api:message-template-test-send": Detail(
        _program_template, methods=("GET", "POST"), payload={"to": "b@tenant-b.example"}
    ),
    "api:program-communications": Detail(_program, methods=("GET", "POST"), payload={"kind": "launch"}),
    "api:participant-communications": Detail(_participant),
    "api:participant-dashboard-url": Detail(_participant, methods=("GET", "POST")),
    "api:webhook-endpoint-list": Listing(_webhook_endpoint_listing),
    "api:webhook-endpoint-detail": Detail(
        _webhook_endpoint_detail, methods=("GET", "PATCH"), payload={"url": "https://b.example/x"}
    ),
    "api:webhook-endpoint-rotate": Detail(_webhook_endpoint_detail, methods=("GET", "POST")),
    "api:webhook-delivery-list": Listing(_webhook_delivery_listing),
    "api:webhook-delivery-detail": Detail(_webhook_delivery_detail, methods=("GET", "POST")),
    "participant_leaderboard": NoTenantData(
        "POST-only through the participant's own signed dashboard token (the same token rules as the dashboard): "
        "engagement/tests/test_dashboard_and_embedding.py::test_leaderboard_opt_in_needs_the_participants_own_token"
    ),
    "embedded_dashboard": NoTenantData(
        "reached by a short-lived signed token naming tenant + participant: "
        "engagement/tests/test_dashboard_and_embedding.py::test_embed_token_of_tenant_a_never_shows_b_and_bad_tokens_"
        "are_refused"
    ),
    "typeform_webhook": NoTenantData(
        "POST-only, answers no tenant data; verified with the addressed tenant's own Typeform secret: "
        "engagement/tests/test_inbound.py::test_a_typeform_response_signed_for_tenant_a_is_refused_on_tenant_b"
    ),
    "email_unsubscribe": NoTenantData(
        "reached by a signed token naming one tenant and one address; shows only that address: "
        "engagement/tests/test_unsubscribe.py::test_a_tampered_unsubscribe_link_is_404"
    ),
}
ROUTES.update(ENGAGEMENT_ROUTES)


def _nps_import_admin(world):
    from engagement.models import NpsImport

    return NpsImport.objects.create(tenant=world.a, filename="only-a.csv", content="x")


def _engagement_program_a(world):
    return f.ProgramFactory(tenant=world.a)


def _trigger_policy_admin(world):
    from engagement.models import TriggerPolicy

    return TriggerPolicy.objects.create(tenant=world.a, program=_engagement_program_a(world), trigger="nps")


def _message_template_admin(world):
    from engagement.models import MessageTemplate

    return MessageTemplate.objects.create(
        tenant=world.a, program=_engagement_program_a(world), kind="launch", subject="Only A", body="Body of A"
    )


def _webhook_endpoint_admin(world):
    from engagement.models import WebhookEndpoint

    return WebhookEndpoint.objects.create(tenant=world.a, url="https://a.example/hook", secret="whsec_onlyA")


def _webhook_delivery_admin(world):
    from engagement.models import WebhookDelivery, WebhookMessage

    message = WebhookMessage.objects.create(
        tenant=world.a, msg_id="msg_onlyA", event_type="referral.created", payload={}, dedupe_key="only-a"
    )
    return WebhookDelivery.objects.create(tenant=world.a, endpoint=_webhook_endpoint_admin(world), message=message)


def _communication_admin(world):
    from engagement.models import Communication

    participant = f.ParticipantFactory(program=_engagement_program_a(world))
    return Communication.objects.create(
        tenant=world.a,
        participant=participant,
        kind="launch",
        related_key="only-a",
        email_to=participant.email,
        subject="Only A",
        body="Body of A",
    )


def _moment_admin(world):
    from engagement.models import Moment

    return Moment.objects.create(
        tenant=world.a,
        trigger="nps",
        external_id="resp-only-a",
        customer_external_id="cust-a",
        email="promoter@a.example",
        score=10,
        occurred_at=timezone.now(),
    )


def _register_engagement_admin_factories():
    from engagement.models import (
        Communication,
        MessageTemplate,
        Moment,
        NpsImport,
        TriggerPolicy,
        WebhookDelivery,
        WebhookEndpoint,
    )

    ADMIN_FACTORIES[NpsImport] = _nps_import_admin
    ADMIN_FACTORIES[TriggerPolicy] = _trigger_policy_admin
    ADMIN_FACTORIES[MessageTemplate] = _message_template_admin
    ADMIN_FACTORIES[WebhookEndpoint] = _webhook_endpoint_admin
    ADMIN_FACTORIES[WebhookDelivery] = _webhook_delivery_admin
    ADMIN_FACTORIES[Communication] = _communication_admin
    ADMIN_FACTORIES[Moment] = _moment_admin


_register_engagement_admin_factories()
