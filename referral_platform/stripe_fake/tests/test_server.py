"""The fake Stripe server's list endpoints and idempotency-key expiry, through the official library."""

from __future__ import annotations

import json
from urllib.request import Request, urlopen

import pytest
import stripe

from referral_platform.stripe_fake import StripeControl, start


@pytest.fixture(scope="module")
def server():
    running = start()
    yield running
    running.stop()


@pytest.fixture
def control(server) -> StripeControl:
    control = StripeControl(server.url)
    control.reset()
    return control


@pytest.fixture
def client(server, control) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_fake", base_addresses={"api": server.url}, max_network_retries=0)


def _transfer(client, account: str, group: str, key: str | None = None, amount: int = 100):
    options = {"idempotency_key": key} if key else {}
    params = {"amount": amount, "currency": "usd", "destination": account, "transfer_group": group}
    return client.v1.transfers.create(params, options)


def _get(base_url: str, path: str) -> dict:
    request = Request(base_url + path, headers={"Authorization": "Bearer sk_test_fake"})  # noqa: S310 - loopback
    with urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def test_transfers_are_listed_by_transfer_group_in_stripes_list_shape_newest_first(server, client):
    account = client.v1.accounts.create({"type": "express"}).id
    first = _transfer(client, account, "payout-1")
    _transfer(client, account, "payout-2")
    second = _transfer(client, account, "payout-1")

    raw = _get(server.url, "/v1/transfers?transfer_group=payout-1")
    page = client.v1.transfers.list({"transfer_group": "payout-1"})

    assert {key: raw[key] for key in ("object", "has_more", "url")} == {
        "object": "list",
        "has_more": False,
        "url": "/v1/transfers",
    }
    assert [t["id"] for t in raw["data"]] == [t.id for t in page.data] == [second.id, first.id]
    assert client.v1.transfers.list({"transfer_group": "payout-3"}).data == []


def test_a_list_is_paged_with_limit_and_starting_after(client):
    account = client.v1.accounts.create({"type": "express"}).id
    made = [_transfer(client, account, "g", amount=amount).id for amount in (100, 200, 300)]

    page = client.v1.transfers.list({"limit": 2})

    assert [t.id for t in page.data] == made[:0:-1] and page.has_more is True
    assert [t.id for t in page.auto_paging_iter()] == made[::-1]


def test_coupons_and_promotion_codes_are_listed_with_their_filters(client):
    customer = client.v1.customers.create({"email": "dana@example.com"}).id
    coupon = client.v1.coupons.create({"percent_off": 100, "duration": "once"})
    other = client.v1.coupons.create({"amount_off": 500, "currency": "usd"})
    code = client.v1.promotion_codes.create(
        {"promotion": {"type": "coupon", "coupon": coupon.id}, "customer": customer}
    )
    client.v1.promotion_codes.create({"promotion": {"type": "coupon", "coupon": other.id}})

    coupons = client.v1.coupons.list({"created": {"gte": coupon.created}})
    codes = client.v1.promotion_codes.list({"coupon": coupon.id, "customer": customer})

    assert [c.id for c in coupons.data] == [other.id, coupon.id]
    assert client.v1.coupons.list({"created": {"gt": coupon.created + 3600}}).data == []
    assert [c.id for c in codes.data] == [code.id]


def test_expired_idempotency_keys_make_the_same_request_execute_again(client, control):
    account = client.v1.accounts.create({"type": "express"}).id
    first = _transfer(client, account, "payout-9", key="payout-abc:transfer")
    replayed = _transfer(client, account, "payout-9", key="payout-abc:transfer")
    assert replayed.id == first.id and len(control.objects("transfer")) == 1

    assert control.expire_idempotency_keys(older_than_seconds=3600) == 0  # too recent: kept
    assert control.expire_idempotency_keys() >= 1
    again = _transfer(client, account, "payout-9", key="payout-abc:transfer")

    assert again.id != first.id and len(control.objects("transfer")) == 2  # what Stripe does after ~24 h
    assert [r["replayed"] for r in control.requests("/v1/transfers", "POST")] == [False, True, False]
