"""factory_boy factories for every model; the isolation harness uses them to make tenant A's rows."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from partners import models as partner_models
from programs.models import Participant, Program, ProgramStatus, ProgramVersion
from programs.services import program_rules_snapshot
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import AuditEvent, Invitation, Membership, Role, Tenant
from referral_platform.tenancy.services import api_key_create
from referrals.models import (
    Attribution,
    Click,
    ConversionEvent,
    FraudFlag,
    FraudPolicy,
    FraudSignalCode,
    IdentityKind,
    IdentityLink,
    Referral,
    ReferralLink,
    ReviewStatus,
    Touchpoint,
    TouchpointKind,
)

PASSWORD = "correct-horse-battery-9"


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    slug = factory.Sequence(lambda n: f"tenant-{n}")
    name = factory.Sequence(lambda n: f"Tenant {n}")
    allowed_landing_domains = factory.LazyAttribute(lambda o: [f"{o.slug}.example", f".{o.slug}.example"])


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}@people.example")
    email = factory.LazyAttribute(lambda o: o.username)
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    tenant = factory.SubFactory(TenantFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MARKETER


class ProgramFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Program

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Program {n} zq{n:04d}")
    slug = factory.Sequence(lambda n: f"program-{n}")
    status = ProgramStatus.ACTIVE
    landing_url = factory.LazyAttribute(lambda o: f"https://{o.tenant.slug}.example/signup")


class ParticipantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Participant

    tenant = factory.LazyAttribute(lambda o: o.program.tenant)
    program = factory.SubFactory(ProgramFactory)
    external_id = factory.Sequence(lambda n: f"ext-{n}")
    name = factory.Sequence(lambda n: f"Participant {n} px{n:04d}")
    email = factory.Sequence(lambda n: f"participant{n}@customer.example")
    coupon_code = factory.Sequence(lambda n: f"PX{n:06d}")


class ReferralLinkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ReferralLink

    participant = factory.SubFactory(ParticipantFactory)
    tenant = factory.LazyAttribute(lambda o: o.participant.tenant)
    program = factory.LazyAttribute(lambda o: o.participant.program)
    code = factory.Sequence(lambda n: f"code{n:06d}")


class ClickFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Click

    link = factory.SubFactory(ReferralLinkFactory)
    tenant = factory.LazyAttribute(lambda o: o.link.tenant)
    program = factory.LazyAttribute(lambda o: o.link.program)
    participant = factory.LazyAttribute(lambda o: o.link.participant)
    stream_id = factory.Sequence(lambda n: f"{n}-0")
    visitor_id = factory.Sequence(lambda n: f"visitor{n}")
    occurred_at = factory.LazyFunction(timezone.now)


class ReferralFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Referral

    referrer = factory.SubFactory(ParticipantFactory)
    tenant = factory.LazyAttribute(lambda o: o.referrer.tenant)
    program = factory.LazyAttribute(lambda o: o.referrer.program)
    referred_email = factory.Sequence(lambda n: f"lead{n}@prospect.example")
    referred_company = factory.Sequence(lambda n: f"Prospect {n} rq{n:04d}")


class InvitationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Invitation

    tenant = factory.SubFactory(TenantFactory)
    email = factory.Sequence(lambda n: f"invitee{n}@people.example")
    token_hash = factory.Sequence(lambda n: f"{n:064d}")
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=7))


class AuditEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AuditEvent

    tenant = factory.SubFactory(TenantFactory)
    actor = "system"
    action = factory.Sequence(lambda n: f"thing.happened{n}")
    object_type = "programs.program"
    object_id = factory.Sequence(str)


def make_api_key(tenant: Tenant, name: str = "test key"):
    """An issued key (model + raw secret) for ``tenant``, made through the real service."""
    return api_key_create(tenant=tenant, name=name, actor=system_actor(tenant))


class ConversionEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConversionEvent

    tenant = factory.SubFactory(TenantFactory)
    external_event_id = factory.Sequence(lambda n: f"evt_{n:08d}")
    kind = "payment"
    amount_minor = 10_000
    currency = "USD"
    occurred_at = factory.LazyFunction(timezone.now)


def _example_rules(currency: str) -> dict:
    from programs.rules import example_rules

    return example_rules(currency)


class ProgramVersionFactory(factory.django.DjangoModelFactory):
    """A rules version: valid example rewards in the program's currency plus its judging settings."""

    class Meta:
        model = ProgramVersion

    program = factory.SubFactory(ProgramFactory)
    tenant = factory.LazyAttribute(lambda o: o.program.tenant)
    number = factory.Sequence(lambda n: n + 1)
    rules = factory.LazyAttribute(
        lambda o: {**_example_rules(o.program.currency), **program_rules_snapshot(program=o.program)}
    )
    created_by = "factory"


class TouchpointFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Touchpoint

    participant = factory.SubFactory(ParticipantFactory)
    tenant = factory.LazyAttribute(lambda o: o.participant.tenant)
    program = factory.LazyAttribute(lambda o: o.participant.program)
    kind = TouchpointKind.LEAD_FORM
    email = factory.Sequence(lambda n: f"touched{n}@prospect.example")
    label = factory.Sequence(lambda n: f"Touch {n} tq{n:04d}")
    occurred_at = factory.LazyFunction(timezone.now)


class IdentityLinkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = IdentityLink

    tenant = factory.SubFactory(TenantFactory)
    a_kind = IdentityKind.EMAIL
    a_value = factory.Sequence(lambda n: f"person{n}@prospect.example")
    b_kind = IdentityKind.VISITOR
    b_value = factory.Sequence(lambda n: f"visitor-{n}")
    source = "sign_up"


class AttributionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Attribution

    participant = factory.SubFactory(ParticipantFactory)
    tenant = factory.LazyAttribute(lambda o: o.participant.tenant)
    program = factory.LazyAttribute(lambda o: o.participant.program)
    conversion_event = factory.SubFactory(ConversionEventFactory, tenant=factory.SelfAttribute("..tenant"))
    model = "last_touch"
    share = Decimal("1.000000")
    amount_minor = 10_000
    currency = "USD"


# --- rewards -----------------------------------------------------------------------------------
from rewards.models import (  # noqa: E402
    ParticipantMessage,
    ParticipantStripeProfile,
    Payout,
    PayoutSettings,
    Reward,
    RewardEvaluation,
    StripeCredentials,
    StripeWebhookEvent,
)


class StripeCredentialsFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StripeCredentials

    tenant = factory.SubFactory(TenantFactory)
    secret_key = factory.Sequence(lambda n: f"sk_test_{n:024d}")
    webhook_secret = factory.Sequence(lambda n: f"whsec_{n:032d}")


class ParticipantStripeProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ParticipantStripeProfile

    participant = factory.SubFactory(ParticipantFactory)
    tenant = factory.LazyAttribute(lambda o: o.participant.tenant)
    connected_account_id = factory.Sequence(lambda n: f"acct_{n:016d}")


class PayoutSettingsFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PayoutSettings

    program = factory.SubFactory(ProgramFactory)
    tenant = factory.LazyAttribute(lambda o: o.program.tenant)
    minimum_payout_minor = 1_000


class RewardFactory(factory.django.DjangoModelFactory):
    """A reward row without ledger entries (admin / isolation tests); use rewards.services.reward_create
    when the ledger matters."""

    class Meta:
        model = Reward

    participant = factory.SubFactory(ParticipantFactory)
    tenant = factory.LazyAttribute(lambda o: o.participant.tenant)
    program = factory.LazyAttribute(lambda o: o.participant.program)
    amount_minor = 2_500
    currency = factory.LazyAttribute(lambda o: o.program.currency)
    hold_until = factory.LazyFunction(timezone.now)
    converted_at = factory.LazyFunction(timezone.now)
    source_key = factory.Sequence(lambda n: f"source-{n}")


class PayoutFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Payout

    participant = factory.SubFactory(ParticipantFactory)
    tenant = factory.LazyAttribute(lambda o: o.participant.tenant)
    program = factory.LazyAttribute(lambda o: o.participant.program)
    method = "manual"
    currency = factory.LazyAttribute(lambda o: o.program.currency)
    gross_minor = 0
    amount_minor = 0
    idempotency_key = factory.LazyFunction(Payout.new_idempotency_key)


class StripeWebhookEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StripeWebhookEvent

    tenant = factory.SubFactory(TenantFactory)
    stripe_event_id = factory.Sequence(lambda n: f"evt_test_{n:010d}")
    type = "customer.created"
    payload = factory.LazyAttribute(lambda o: {"id": o.stripe_event_id, "type": o.type, "data": {"object": {}}})


def make_ledger_reward(participant, amount_minor: int = 2_500, **kwargs):
    """A reward created through the real service (so it has its accrual transaction)."""
    from rewards.services import reward_create

    return reward_create(
        tenant=participant.tenant,
        program=participant.program,
        participant=participant,
        amount_minor=amount_minor,
        source_key=kwargs.pop("source_key", f"test:{participant.pk}:{Reward.objects.count()}:{amount_minor}"),
        actor=system_actor(participant.tenant),
        **kwargs,
    )


class FraudPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FraudPolicy

    program = factory.SubFactory(ProgramFactory)
    tenant = factory.LazyAttribute(lambda o: o.program.tenant)


class FraudFlagFactory(factory.django.DjangoModelFactory):
    """A flag on a flagged referral (the referral is put in review, as screening would)."""

    class Meta:
        model = FraudFlag

    referral = factory.SubFactory(ReferralFactory, review_status=ReviewStatus.FLAGGED)
    tenant = factory.LazyAttribute(lambda o: o.referral.tenant)
    code = FraudSignalCode.DISPOSABLE_EMAIL
    message = factory.Sequence(lambda n: f"Throw-away e-mail domain fq{n:04d}")
    evidence = factory.LazyFunction(
        lambda: {
            "compared": [{"field": "E-mail domain", "referral": "mailinator.com", "other": "mailinator.com"}],
            "rows": [],
            "params": {},
        }
    )


class ParticipantImportFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "programs.ParticipantImport"

    program = factory.SubFactory(ProgramFactory)
    tenant = factory.LazyAttribute(lambda o: o.program.tenant)
    filename = factory.Sequence(lambda n: f"participants-{n}.csv")
    content = "external_id,name,email\nx-1,Ann Example,ann@customer.example\n"
    total_rows = 1


class RewardEvaluationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RewardEvaluation

    conversion_event = factory.SubFactory(ConversionEventFactory)
    tenant = factory.LazyAttribute(lambda o: o.conversion_event.tenant)
    status = "blocked"
    notes = factory.LazyFunction(lambda: ["Referral is flagged for fraud review."])


class ParticipantMessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ParticipantMessage

    participant = factory.SubFactory(ParticipantFactory)
    tenant = factory.LazyAttribute(lambda o: o.participant.tenant)
    kind = "referral_received"
    related_key = factory.Sequence(lambda n: f"referral:{n}")
    subject = factory.Sequence(lambda n: f"Thanks for your referral mq{n:04d}")
    body = "Thanks, we'll review it within 24 hours."
    email_to = factory.LazyAttribute(lambda o: o.participant.email)


# --- partners ------------------------------------------------------------------------------------


class PartnerTierFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = partner_models.PartnerTier

    tenant = factory.SubFactory(TenantFactory)
    rank = factory.Sequence(lambda n: n)
    slug = factory.Sequence(lambda n: f"tier-{n}")
    name = factory.Sequence(lambda n: f"Tier {n}")


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = partner_models.Partner

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Partner {n} pq{n:04d}")
    partner_type = partner_models.PartnerType.RESELLER
    commission_bp = 2000


class PartnerUserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = partner_models.PartnerUser

    partner = factory.SubFactory(PartnerFactory)
    tenant = factory.LazyAttribute(lambda o: o.partner.tenant)
    user = factory.SubFactory(UserFactory)


class PartnerEnrolmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = partner_models.PartnerEnrolment

    partner = factory.SubFactory(PartnerFactory)
    tenant = factory.LazyAttribute(lambda o: o.partner.tenant)
    program = factory.LazyAttribute(lambda o: ProgramFactory(tenant=o.partner.tenant, kind="partner"))
    participant = factory.LazyAttribute(lambda o: ParticipantFactory(program=o.program, name=o.partner.name))


class DealRegistrationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = partner_models.DealRegistration

    partner = factory.SubFactory(PartnerFactory)
    tenant = factory.LazyAttribute(lambda o: o.partner.tenant)
    program = factory.LazyAttribute(lambda o: ProgramFactory(tenant=o.partner.tenant, kind="partner"))
    participant = factory.LazyAttribute(lambda o: ParticipantFactory(program=o.program))
    company_name = factory.Sequence(lambda n: f"Prospect {n} dq{n:04d}")
    company_key = factory.Sequence(lambda n: f"prospect{n}dq{n:04d}")
    domain = factory.Sequence(lambda n: f"prospect{n}.example.com")
    domain_stem = factory.Sequence(lambda n: f"prospect{n}")
    status = partner_models.DealStatus.APPROVED
    registered_by = "test"
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=60))


class DealConflictFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = partner_models.DealConflict

    holder = factory.SubFactory(DealRegistrationFactory)
    tenant = factory.LazyAttribute(lambda o: o.holder.tenant)
    challenger = factory.LazyAttribute(
        lambda o: DealRegistrationFactory(
            partner=PartnerFactory(tenant=o.holder.tenant),
            program=o.holder.program,
            status=partner_models.DealStatus.CONFLICT,
            company_name=o.holder.company_name,
        )
    )
    match = partner_models.ConflictMatch.DOMAIN
    similarity = Decimal("1.000")


class PartnerApplicationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = partner_models.PartnerApplication

    program = factory.SubFactory(ProgramFactory, kind="partner")
    tenant = factory.LazyAttribute(lambda o: o.program.tenant)
    company = factory.Sequence(lambda n: f"Applicant {n} aq{n:04d}")
    website = factory.Sequence(lambda n: f"https://applicant{n}.example.com")
    website_domain = factory.Sequence(lambda n: f"applicant{n}.example.com")
    partner_type = partner_models.PartnerType.AFFILIATE
    contact_name = "Ann Applicant"
    email = factory.Sequence(lambda n: f"ann{n}@applicant.example")
    audience = "Mid-market finance teams"
    expected_volume = "5 deals a quarter"
    terms_accepted_at = factory.LazyFunction(timezone.now)


class PartnerInvitationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = partner_models.PartnerInvitation

    partner = factory.SubFactory(PartnerFactory)
    tenant = factory.LazyAttribute(lambda o: o.partner.tenant)
    email = factory.Sequence(lambda n: f"colleague{n}@partner.example")
    token_hash = factory.Sequence(lambda n: f"{n:064d}")
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=14))


class ResourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = partner_models.Resource

    tenant = factory.SubFactory(TenantFactory)
    title = factory.Sequence(lambda n: f"Resource {n} rs{n:04d}")
    category = partner_models.ResourceCategory.DECK
    url = "https://video.example/watch"


class SupportTicketFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = partner_models.SupportTicket

    partner = factory.SubFactory(PartnerFactory)
    tenant = factory.LazyAttribute(lambda o: o.partner.tenant)
    subject = factory.Sequence(lambda n: f"Question {n} tq{n:04d}")
    opened_by = "test"


class PartnerProgramSettingsFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = partner_models.PartnerProgramSettings

    program = factory.SubFactory(ProgramFactory, kind="partner")
    tenant = factory.LazyAttribute(lambda o: o.program.tenant)


class PartnerTierChangeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = partner_models.PartnerTierChange

    partner = factory.SubFactory(PartnerFactory)
    tenant = factory.LazyAttribute(lambda o: o.partner.tenant)
    direction = partner_models.TierChangeDirection.SET
    actor = "test"


# --- analytics (issue 10) ----------------------------------------------------------------------------
class OtherChannelCustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "analytics.OtherChannelCustomer"

    tenant = factory.SubFactory(TenantFactory)
    external_id = factory.Sequence(lambda n: f"other-{n}")
    channel = "paid_search"
    lead_at = factory.LazyFunction(lambda: timezone.now() - timedelta(days=20))
    converted_at = factory.LazyFunction(lambda: timezone.now() - timedelta(days=5))
    deal_minor = 120_000
    arr_minor = 120_000
    currency = "USD"
