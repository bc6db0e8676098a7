"""The getting-started checklist of a workspace: what is done, and where to do the rest.

A top-layer reader (it looks at programs, referrals and rewards); nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse

from programs.models import Participant, Program
from referral_platform.tenancy.models import Tenant
from referrals.models import Referral
from rewards.models import MessageKind, ParticipantMessage, StripeCredentials, StripeWebhookEvent


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    done: bool
    how: str  # where to do it, in words ("Settings → Domains")
    url: str


def onboarding_steps(tenant: Tenant) -> list[Step]:
    """The steps that get ``tenant`` live, in order, each with whether it is done."""
    credentials = StripeCredentials.objects.for_tenant(tenant).first()
    first_program = Program.objects.for_tenant(tenant).order_by("pk").first()
    return [
        Step(
            "domains",
            "Allow your landing domains",
            bool(tenant.allowed_landing_domains),
            "Settings → Domains: add the domain of your sign-up page (e.g. acme.com).",
            reverse("admin:tenancy_tenant_change", args=[tenant.pk]),
        ),
        Step(
            "stripe",
            "Connect Stripe (webhook secret; a secret key only for payouts)",
            credentials is not None and bool(credentials.webhook_secret),
            "Settings → Stripe: paste the webhook signing secret of the endpoint below.",
            reverse("admin:rewards_stripecredentials_changelist"),
        ),
        Step(
            "webhook",
            "Receive a first (test) webhook from Stripe",
            StripeWebhookEvent.objects.for_tenant(tenant).exists(),
            "In Stripe, send a test event to your endpoint: "
            + reverse("stripe_webhook", kwargs={"tenant_slug": tenant.slug}),
            reverse("admin:rewards_stripewebhookevent_changelist"),
        ),
        Step(
            "program",
            "Create your first program from a template",
            first_program is not None,
            "Programs → New program (guided builder).",
            reverse("admin:programs_program_builder"),
        ),
        Step(
            "snippet",
            "Install the tracking snippet (done when the first sign-up arrives)",
            Referral.objects.for_tenant(tenant).exists(),
            "Put the snippet below on your site and pass the visitor id with your sign-up.",
            reverse("onboarding") + "#snippet",
        ),
        Step(
            "invite",
            "Invite your first participants",
            ParticipantMessage.objects.for_tenant(tenant).filter(kind=MessageKind.WELCOME).exists()
            or Participant.objects.for_tenant(tenant).exclude(source="referred").exists(),
            "People → Participants → Add, or import a CSV; each gets a welcome e-mail.",
            reverse("admin:programs_participant_add"),
        ),
    ]
