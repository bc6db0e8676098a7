"""Demo partners: one of each type with a portal login, tiers, deals in every state, a conflict waiting
for a marketer, a resource library, support tickets and an application to review (``seed_demo``)."""

from __future__ import annotations

from datetime import timedelta

from django.core.files.base import ContentFile
from django.utils import timezone

from partners.models import (
    DealRegistration,
    Partner,
    PartnerProgramSettings,
    PartnerRole,
    PartnerTier,
    PartnerUser,
    Resource,
)
from partners.services import (
    application_submit,
    deal_register,
    deal_reject,
    deal_stage_update,
    deals_expire,
    partner_create,
    partner_enrol,
    partner_tier_change,
    ticket_open,
    ticket_reply,
)
from programs.models import Program
from referral_platform.tenancy.actors import system_actor
from referral_platform.tenancy.models import Tenant

PARTNER_LOGIN = "partner@resellpro.example"
# (name, type, website, portal login, tier slug)
DEMO_PARTNERS = [
    ("ResellPro GmbH", "reseller", "https://resellpro.example", PARTNER_LOGIN, "gold"),
    ("SaaS Reviews Blog", "affiliate", "https://saasreviews.example", "partner@saasreviews.example", "registered"),
    ("Stackline Integrations", "technology", "https://stackline.example", "partner@stackline.example", "silver"),
    ("Growth Agency", "services", "https://growthagency.example", "partner@growthagency.example", "registered"),
]
TIERS = [
    ("registered", "Registered", 0, 0, 0, False, "Self-serve resources and the partner portal."),
    ("silver", "Silver", 1, 2, 5_000_000, False, "Co-marketing kit and the case-study library."),
    ("gold", "Gold", 2, 5, 25_000_000, True, "A dedicated partner manager, the gold playbook and MDF."),
]
RESOURCES = [
    ("Acme Analytics sales deck", "deck", None, "deck.pdf"),
    ("One-pager: Acme for logistics", "one_pager", None, "one-pager.pdf"),
    ("Case study: Global Bank cut reporting time by 60 %", "case_study", "silver", "case-study.pdf"),
    ("Product tour (video)", "video", None, ""),
    ("Partner certification: level 1", "training", None, "certification-1.pdf"),
    ("Gold playbook: enterprise deals", "training", "gold", "gold-playbook.pdf"),
]


def seed_partners(tenant: Tenant, user_for, stdout) -> str:
    """Create the demo partners of ``tenant``'s partner program (idempotent). Returns the partner login."""
    if Partner.objects.for_tenant(tenant).exists():
        return PARTNER_LOGIN
    actor = system_actor(tenant)
    program = Program.objects.for_tenant(tenant).get(slug="partners")
    tiers = {}
    for slug, name, rank, deals, revenue, dedicated, benefits in TIERS:
        tiers[slug] = PartnerTier.objects.create(
            tenant=tenant, slug=slug, name=name, rank=rank, min_won_deals=deals, min_won_revenue_minor=revenue,
            currency=program.currency, benefits=benefits, dedicated_support=dedicated,
        )  # fmt: skip
    PartnerProgramSettings.objects.create(
        tenant=tenant,
        program=program,
        protection_days=60,
        extension_days=30,
        max_protection_days=150,
        required_qualification=["budget", "need"],
        terms_text="Deals are protected for 60 days from registration, extendable by 30 days while they progress "
        "(150 days at most). The first registration of an account wins; conflicts are decided by the partner team.",
    )
    partners = {}
    for name, partner_type, website, login, tier in DEMO_PARTNERS:
        partner = partner_create(tenant=tenant, actor=actor, name=name, partner_type=partner_type, website=website)
        partner_enrol(partner=partner, program=program, actor=actor, email=login)
        PartnerUser.objects.create(tenant=tenant, partner=partner, user=user_for(login), role=PartnerRole.ADMIN)
        if tier != "registered":
            partner_tier_change(
                partner=partner, to_tier=tiers[tier], actor=actor, direction="set", reason="Demo data", metrics={}
            )
        partners[name] = partner
    resell, blog = partners["ResellPro GmbH"], partners["SaaS Reviews Blog"]
    stack, agency = partners["Stackline Integrations"], partners["Growth Agency"]
    now = timezone.now()
    qualified = {"budget": "Approved for this year", "need": "Replace spreadsheets", "authority": "CFO"}

    def register(partner, company, domain, days_ago=0, **extra):
        return deal_register(
            tenant=tenant, partner=partner, program=program, company_name=company, domain=domain,
            actor=f"demo:{partner.name}", now=now - timedelta(days=days_ago), **extra,
        )  # fmt: skip

    register(resell, "Contoso Freight", "contoso-freight.com", 3, qualification=qualified, deal_value_minor=48_000_00)
    proposal = register(
        stack, "Fabrikam Retail", "fabrikam-retail.com", 20, qualification=qualified, deal_value_minor=30_000_00
    )
    deal_stage_update(deal=proposal, stage="proposal", actor="demo:crm")
    register(agency, "Tailspin Toys", "tailspin.com", 1, qualification={"budget": "tbd"})  # waits: need missing
    won = register(
        resell,
        "Northwind Logistics",
        "northwind-logistics.com",
        40,
        qualification=qualified,
        deal_value_minor=90_000_00,
    )
    deal_stage_update(deal=won, stage="won", actor="demo:crm", amount_minor=84_000_00)
    lost = register(blog, "Litware Health", "litware.com", 30, qualification=qualified, deal_value_minor=12_000_00)
    deal_stage_update(deal=lost, stage="lost", actor="demo:crm", reason="Chose an in-house build")
    rejected = register(blog, "Adventure Works", "adventure-works.com", 5, qualification={"need": "x"})
    deal_reject(deal=rejected, actor=actor, reason="Already an Acme customer (direct sales, 2024)")
    register(stack, "Proseware", "proseware.com", 75, qualification=qualified)
    deals_expire(tenant=tenant, now=now)
    held = register(
        resell, "Woodgrove Bank", "woodgrovebank.com", 10, qualification=qualified, deal_value_minor=120_000_00
    )
    register(
        blog,
        "Woodgrove Bank plc",
        "www.woodgrovebank.com",
        0,
        qualification=qualified,
        notes="Met their CTO at a meetup",
    )
    assert held.status == "approved"

    for title, category, tier, filename in RESOURCES:
        resource = Resource(tenant=tenant, title=title, category=category, min_tier=tiers.get(tier) if tier else None)
        if filename:
            resource.file.save(filename, ContentFile(f"%PDF-1.4\n% {title} (demo file)\n".encode()), save=False)
        else:
            resource.url = "https://videos.example/acme-product-tour"
        resource.save()

    ticket_open(
        partner=resell,
        subject="Co-branded deck for Woodgrove?",
        body="Can we get the deck with our logo?",
        actor=f"user:{PARTNER_LOGIN}",
    )
    answered = ticket_open(
        partner=blog, subject="Payout currency", body="Can you pay us in EUR?", actor="user:partner@saasreviews.example"
    )
    ticket_reply(
        ticket=answered,
        body="Yes: set EUR as payout currency in your profile.",
        author_kind="team",
        actor="marketer@acme.example",
    )
    application_submit(
        program=program, company="Bluebird Consulting", website="https://bluebird.example", partner_type="services",
        contact_name="Bea Blue", email="bea@bluebird.example", audience="CFOs of logistics companies",
        expected_volume="3 deals a quarter", terms_accepted=True, country="DE",
    )  # fmt: skip
    states = sorted(set(DealRegistration.objects.for_tenant(tenant).values_list("status", flat=True)))
    stdout.write(f"  {tenant.slug}: {len(partners)} partners, deals in states {', '.join(states)}, 1 conflict waiting")
    return PARTNER_LOGIN
