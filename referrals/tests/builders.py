"""Small builders shared by the referrals tests (real rows, through factories)."""

from __future__ import annotations

from datetime import datetime

from tests.factories import ClickFactory, ParticipantFactory, ProgramFactory, ReferralLinkFactory


def program_for(tenant, **extra):
    return ProgramFactory(tenant=tenant, currency="USD", **extra)


def referrer_with_link(program, *, name="Dana Whitfield", company="Northwind Traders", email=None, code=None):
    participant = ParticipantFactory(
        program=program,
        name=name,
        company=company,
        email=email or f"{name.split()[0].lower()}@{company.split()[0].lower()}.example",
    )
    link = ReferralLinkFactory(participant=participant, **({"code": code} if code else {}))
    return participant, link


def click(link, *, visitor_id: str, at: datetime, is_bot: bool = False):
    return ClickFactory(link=link, visitor_id=visitor_id, occurred_at=at, is_bot=is_bot)


def conversion_payload(**overrides) -> dict:
    payload = {
        "external_event_id": "evt_1001",
        "kind": "payment",
        "amount_minor": 120_00,
        "currency": "USD",
        "occurred_at": "2026-03-01T12:00:00Z",
        "customer_external_id": "cus_42",
    }
    payload.update(overrides)
    return {key: value for key, value in payload.items() if value is not None}
