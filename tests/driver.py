"""Drive tenant A's workspace through its public surfaces, the way a tenant's product and its marketers do:
programs and rules through the API, participants enrolled through the API (their codes as the API shows
them), sign-ups, leads and conversion events through the API, Stripe webhooks signed with the tenant's
secret, the beat task that releases holds, and rewards read back through the API.

Tasks queued on commit run in-process (``django_capture_on_commit_callbacks(execute=True)`` with the test
settings' eager Celery), so every call returns after attribution and reward evaluation have run.
Clicks are written as the click-stream flush writes them (``referrals.Click`` rows): the redirect and the
flush have their own journey test (tests/test_referral_journey.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from programs.models import Participant, Program
from programs.services import program_activate
from referral_platform.tenancy.actors import system_actor
from referrals.models import Channel, ReferralLink
from tests import factories as f

LANDING_URL = "https://tenant-a.example/signup"
LIVE = ("pending", "approved", "paid")  # reward statuses that still owe (or owed) something


def _is_live(reward: dict) -> bool:
    return reward["status"] in LIVE and (reward["net_minor"] > 0 or reward["amount_minor"] == 0)


def at(year: int, month: int, day: int, hour: int = 12) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def rules_doc(referrer=(), referred=(), **extra) -> dict:
    return {"schema_version": 1, "currency": "USD", "referrer": list(referrer), "referred": list(referred), **extra}


@dataclass(frozen=True)
class Person:
    """A participant as the participants API shows it, with the code of their direct link."""

    id: int
    name: str
    email: str
    code: str
    coupon_code: str | None

    @property
    def participant(self) -> Participant:
        return Participant.objects.get(pk=self.id)


class Driver:
    """Tenant A's API key, its Stripe webhook endpoint and its marketers, with on-commit tasks run in-process."""

    def __init__(self, world, capture, *, client=None):
        self.world = world
        self.tenant = world.a
        self.capture = capture
        self.api = world.api(world.key_a)
        self.client = client
        self.now = timezone.now().replace(microsecond=0)
        self.event_ids: dict[str, int] = {}  # external event id → conversion id
        self._programs = 0

    # --- time -------------------------------------------------------------------------------------
    def days_ago(self, days: float) -> datetime:
        return self.now - timedelta(days=days)

    # --- HTTP ---------------------------------------------------------------------------------------
    def post(self, path: str, payload: dict, expect: Iterable[int] = (200, 201)):
        with self.capture(execute=True):
            response = self.api.post(path, payload, format="json")
        assert response.status_code in tuple(expect), (path, response.status_code, response.content)
        return response

    def put(self, path: str, payload: dict, expect: Iterable[int] = (200, 201)):
        with self.capture(execute=True):
            response = self.api.put(path, payload, format="json")
        assert response.status_code in tuple(expect), (path, response.status_code, response.content)
        return response

    def get(self, path: str) -> dict:
        response = self.api.get(path)
        assert response.status_code == 200, (path, response.status_code, response.content)
        return response.json()

    # --- programs and participants ----------------------------------------------------------------
    def program(self, rules: dict, **settings) -> Program:
        """An active program created through the API with ``rules`` as version 1 (no hold unless asked)."""
        self._programs += 1
        settings.setdefault("hold_days", 0)
        settings.setdefault("cookie_window_days", 30)
        settings.setdefault("attribution_model", "last_touch")
        body = {
            "name": f"Promise program {self._programs}",
            "kind": "customer",
            "landing_url": LANDING_URL,
            "currency": "USD",
            "rules": rules,
            **settings,
        }
        created = self.post("/api/v1/programs", body, expect=(201,)).json()
        program = Program.objects.get(pk=created["id"])
        with self.capture(execute=True):
            return program_activate(program=program, actor=system_actor(self.tenant), reason="test")

    def change_rules(self, program: Program, rules: dict) -> int:
        return self.put(f"/api/v1/programs/{program.pk}/rules", {"rules": rules}, expect=(201,)).json()["version"]

    def terms(self, program: Program) -> dict:
        return self.get(f"/api/v1/programs/{program.pk}/terms")

    def enrol(self, program: Program, name: str, *, company: str = "", email: str | None = None) -> Person:
        """A participant enrolled through the API; their direct link's code and coupon code as the API shows them."""
        slug = name.lower().replace(" ", "")
        body = {
            "program": program.pk,
            "external_id": f"p-{slug}",
            "name": name,
            "email": email or f"{slug}@{slug}-partners.example",
            "company": company,
        }
        shown = self.post("/api/v1/participants", body, expect=(201,)).json()
        detail = self.get(f"/api/v1/participants/{shown['id']}")
        links = self.get(f"/api/v1/participants/{shown['id']}/links")["links"]
        [code] = [link["code"] for link in links if link["channel"] == Channel.DIRECT]
        return Person(shown["id"], name, body["email"], code, detail.get("coupon_code"))

    def click(self, person: Person, *, visitor: str, when: datetime):
        """A counted (non-bot) click of the person's direct link, as the click-stream flush stores it."""
        link = ReferralLink.objects.get(tenant=self.tenant, code=person.code)
        return f.ClickFactory(link=link, visitor_id=visitor, occurred_at=when)

    # --- what the tenant's product reports --------------------------------------------------------
    def sign_up(
        self,
        *,
        email: str,
        customer: str,
        when: datetime,
        code: str = "",
        visitor: str = "",
        coupon: str = "",
        expect: Iterable[int] = (200, 201),
        **extra,
    ) -> dict:
        """``POST /api/v1/signups``; returns the response body (``referral`` may be null)."""
        body = {"email": email, "customer_external_id": customer, "occurred_at": when.isoformat(), **extra}
        body.setdefault("company", email.split("@")[1].split(".")[0].title())
        for name, value in (("referral_code", code), ("visitor_id", visitor), ("coupon_code", coupon)):
            if value:
                body[name] = value
        response = self.post("/api/v1/signups", body, expect=expect)
        return {"status_code": response.status_code, **response.json()}

    def lead(self, *, email: str, company: str, when: datetime, expect: Iterable[int] = (201,), **extra) -> dict:
        """``POST /api/v1/leads``; returns the referral the API answers."""
        body = {"name": extra.pop("name", "Lead Person"), "email": email, "company": company, **extra}
        body["occurred_at"] = when.isoformat()
        return self.post("/api/v1/leads", body, expect=expect).json()

    def event(self, external_id: str, kind: str, *, when: datetime, customer: str = "", amount: int = 0, **extra):
        """``POST /api/v1/conversions``; returns the processed event as ``GET /api/v1/conversions/<id>`` shows it."""
        body = {"external_event_id": external_id, "kind": kind, "occurred_at": when.isoformat(), **extra}
        if customer:
            body["customer_external_id"] = customer
        if amount or kind in ("payment", "refund"):
            body.update(amount_minor=amount, currency="USD")
        receipt = self.post("/api/v1/conversions", body).json()
        self.event_ids[external_id] = receipt["id"]
        return self.get(f"/api/v1/conversions/{receipt['id']}")

    def pay(self, external_id: str, *, customer: str, amount: int, when: datetime, **extra):
        return self.event(external_id, "payment", customer=customer, amount=amount, when=when, **extra)

    def refund(self, external_id: str, *, customer: str, amount: int, when: datetime, refunds: str):
        return self.event(external_id, "refund", customer=customer, amount=amount, when=when, refunded_event_id=refunds)

    def cancel(self, external_id: str, *, customer: str, when: datetime):
        return self.event(external_id, "cancellation", customer=customer, when=when)

    # --- marketers and the beat -------------------------------------------------------------------
    def release_holds(self) -> None:
        """The beat task that approves rewards whose hold ended (within the auto-approve limit)."""
        from rewards.tasks import release_holds

        with self.capture(execute=True):
            release_holds.apply()

    def clear_review(self, referral_id: int) -> dict:
        path = f"/api/v1/referrals/{referral_id}/fraud"
        return self.post(path, {"decision": "clear", "reason": "Checked by the team"}).json()

    def pay_out(self, person: Person) -> None:
        """Approve the person's pending rewards and pay them out by hand (a fulfilled manual payout)."""
        from rewards.models import ParticipantStripeProfile, Reward
        from rewards.payouts import payout_mark_fulfilled, payout_prepare
        from rewards.services import reward_approve

        actor = system_actor(self.tenant)
        participant = person.participant
        if not ParticipantStripeProfile.objects.filter(participant=participant).exists():
            f.ParticipantStripeProfileFactory(participant=participant)
        with self.capture(execute=True):
            for reward in Reward.objects.filter(participant_id=person.id, status="pending"):
                reward_approve(reward=reward, actor=actor)
            for payout in payout_prepare(participant=participant):
                payout_mark_fulfilled(payout=payout, actor=actor, reference=f"manual-{payout.pk}")

    # --- what participants are owed ---------------------------------------------------------------
    def rewards(self, **filters) -> list[dict]:
        query = "&".join(f"{name}={value}" for name, value in {"limit": 500, **filters}.items())
        return sorted(self.get(f"/api/v1/rewards?{query}")["results"], key=lambda reward: reward["id"])

    def external_id(self, conversion_id: int | None) -> str | None:
        return next((name for name, pk in self.event_ids.items() if pk == conversion_id), None)

    def earned(self, person: Person, *, side: str = "referrer") -> list[tuple[str | None, int]]:
        """(external event id, net amount) of the person's live rewards, oldest first (a reward refunded or
        clawed back to nothing is not live, whatever its status says)."""
        return [
            (self.external_id(reward["conversion_event"]), reward["net_minor"])
            for reward in self.rewards(participant=person.id)
            if _is_live(reward) and reward["beneficiary_side"] == side
        ]

    def referred_rewards(self, referral_id: int) -> list[dict]:
        """The live rewards of the referred company of ``referral_id``."""
        return [
            reward
            for reward in self.rewards(referral=referral_id)
            if reward["beneficiary_side"] == "referred" and _is_live(reward)
        ]

    def referral(self, referral_id: int) -> dict:
        return self.get(f"/api/v1/referrals/{referral_id}")
