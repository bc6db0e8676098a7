"""Builders for the partners tests: real rows through the services."""

from __future__ import annotations

from partners.models import PartnerRole, PartnerUser
from partners.services import partner_create, partner_enrol
from programs.models import ProgramAccess, ProgramKind
from programs.services import program_rules_change
from referral_platform.tenancy.actors import system_actor
from tests.factories import ProgramFactory, UserFactory


def partner_program(tenant, **extra):
    program = ProgramFactory(
        tenant=tenant,
        kind=extra.pop("kind", ProgramKind.PARTNER),
        access=extra.pop("access", ProgramAccess.GATED),
        currency="USD",
        hold_days=0,
        **extra,
    )
    program_rules_change(
        program=program,
        actor=system_actor(tenant),
        rules={
            "schema_version": 1,
            "currency": "USD",
            "referrer": [{"kind": "percent_of_revenue", "percent_bp": 1000}],
            "referred": [],
        },
    )
    return program


def enrolled_partner(tenant, program, *, name="Quanta Partners", partner_type="reseller", user_email=None, **extra):
    partner = partner_create(tenant=tenant, actor=system_actor(tenant), name=name, partner_type=partner_type, **extra)
    email = user_email or f"{name.split()[0].lower()}@{name.split()[0].lower()}-partner.example"
    partner_enrol(partner=partner, program=program, actor=system_actor(tenant), email=email)
    user = UserFactory(username=email, email=email)
    PartnerUser.objects.create(tenant=tenant, partner=partner, user=user, role=PartnerRole.ADMIN)
    return partner, user
