"""Drive the real pipeline in tests: sign-up and conversion APIs → processing → attribution → reward
evaluation (the tasks run in-process when the surrounding transaction's callbacks are executed)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from programs.services import program_rules_change
from referral_platform.tenancy.actors import system_actor
from referrals.models import ConversionEvent, Referral
from tests import factories as f


def rules_doc(referrer=(), referred=(), **extra) -> dict:
    return {"schema_version": 1, "currency": "USD", "referrer": list(referrer), "referred": list(referred), **extra}


def program_with_rules(tenant, rules: dict, **fields):
    """An active USD program (no hold unless asked) whose current rule version is ``rules``."""
    fields.setdefault("hold_days", 0)
    program = f.ProgramFactory(tenant=tenant, currency="USD", **fields)
    program_rules_change(program=program, actor=system_actor(tenant), rules=rules)
    return program


def referrer(program, name: str, **fields):
    """An active participant with a direct link (code derived from the name, unique per test)."""
    slug = name.lower().replace(" ", "")
    participant = f.ParticipantFactory(program=program, name=name, email=f"{slug}@partners.example", **fields)
    link = f.ReferralLinkFactory(participant=participant, code=f"{slug[:20]}{participant.pk}")
    return participant, link


def iso(moment: datetime) -> str:
    return moment.isoformat()


class Pipeline:
    """Posts to the real APIs as tenant A and runs every task queued on commit, in-process."""

    def __init__(self, world, capture):
        self.world = world
        self.capture = capture
        self.client = world.api(world.key_a)

    def post(self, path: str, payload: dict, expect=(200, 201)):
        with self.capture(execute=True):
            response = self.client.post(path, payload, format="json")
        assert response.status_code in expect, response.content
        return response

    def sign_up(self, *, email: str, customer: str, code: str = "", visitor: str = "", at=None, **extra) -> Referral:
        payload = {"email": email, "customer_external_id": customer, "company": extra.pop("company", email), **extra}
        if code:
            payload["referral_code"] = code
        if visitor:
            payload["visitor_id"] = visitor
        payload["occurred_at"] = iso(at or timezone.now() - timedelta(days=1))
        response = self.post("/api/v1/signups", payload)
        return Referral.objects.get(pk=response.json()["referral"]["id"])

    def event(self, external_event_id: str, kind: str, *, customer: str, amount: int = 0, at=None, **extra):
        payload = {
            "external_event_id": external_event_id,
            "kind": kind,
            "occurred_at": iso(at or timezone.now() - timedelta(hours=1)),
            "customer_external_id": customer,
            **extra,
        }
        if amount or kind in ("payment", "refund"):
            payload.update(amount_minor=amount, currency="USD")
        response = self.post("/api/v1/conversions", payload)
        return ConversionEvent.objects.get(pk=response.json()["id"])

    def pay(self, external_event_id: str, *, customer: str, amount: int, at=None, **extra) -> ConversionEvent:
        return self.event(external_event_id, "payment", customer=customer, amount=amount, at=at, **extra)
