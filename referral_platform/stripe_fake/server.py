"""A small Stripe-compatible HTTP server for tests, benchmarks and local development.

It covers what localstripe lacks: Connect accounts and account links, transfers and transfer reversals,
customers with balance transactions, coupons and promotion codes, subscriptions (their ``discounts``), and
Stripe's Idempotency-Key rules
(same key + same parameters → the first response replayed; same key + different parameters → 400
``idempotency_error``). It speaks Stripe's wire format: form-encoded bodies in bracket notation,
JSON objects with ``object`` and prefixed ``id``, Stripe's error shape.

Control endpoints (no API key) let a test steer and observe it:

- ``POST /_control/fail`` ``{"path": "/v1/transfers", "method": "POST", "times": 1, "status": 500,
  "mode": "error"}``: the next ``times`` matching calls misbehave. Modes: ``error`` (answer ``status``
  without executing), ``hang`` (never answer, without executing), ``hang_after`` (execute, keep the
  idempotent result, never answer), ``close`` / ``close_after`` (drop the connection before / after
  executing). ``seconds`` bounds a hang (default 60).
- ``GET /_control/requests``: every API call received (method, path, params, idempotency key, status).
- ``GET /_control/objects/<kind>``: the stored objects of a kind (``transfer``, ``account``, ...).
- ``POST /_control/expire_idempotency_keys`` ``{"older_than_seconds": 0}``: forget the stored results of
  idempotency keys (all, or those first used longer ago than given), as Stripe does after about 24
  hours: the next request with such a key executes again. Answers ``{"expired": <count>}``.
- ``POST /_control/reset``: forget everything.

List endpoints (transfers, with ``transfer_group`` / ``destination``; balance transactions of a
customer; coupons; promotion codes, with ``coupon`` / ``customer`` / ``code`` / ``active``) answer in
Stripe's shape, newest first, with ``limit`` (default 10), ``starting_after`` / ``ending_before`` and
``created[gt|gte|lt|lte]``.

An injected ``error`` is not stored as an idempotent result (the call never started executing), so a
retry with the same key executes; results of executed calls are stored and replayed, as Stripe does.

Run standalone: ``python -m referral_platform.stripe_fake --port 12111``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

PREFIXES = {
    "account": "acct_",
    "account_link": "",
    "transfer": "tr_",
    "transfer_reversal": "trr_",
    "customer": "cus_",
    "customer_balance_transaction": "cbtxn_",
    "coupon": "",
    "promotion_code": "promo_",
    "subscription": "sub_",
    "discount": "di_",
}


class StripeError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type_, "message": message}}
        if param:
            self.body["error"]["param"] = param
        if code:
            self.body["error"]["code"] = code


def parse_form(body: str) -> dict[str, Any]:
    """Stripe's bracket notation → nested dicts / lists: ``a[b][0][c]=1`` → {"a": {"b": [{"c": "1"}]}}."""
    result: dict[str, Any] = {}
    for raw_key, value in parse_qsl(body, keep_blank_values=True):
        parts = raw_key.replace("]", "").split("[")
        node: Any = result
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            nxt = None if last else parts[index + 1]
            child_default: Any = [] if (nxt is not None and (nxt == "" or nxt.isdigit())) else {}
            if isinstance(node, list):
                if part == "":
                    if last:
                        node.append(value)
                        break
                    node.append(child_default)
                    node = node[-1]
                    continue
                position = int(part)
                while len(node) <= position:
                    node.append(None)
                if last:
                    node[position] = value
                else:
                    if node[position] is None:
                        node[position] = child_default
                    node = node[position]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, child_default)
    return result


def _int(params: dict, name: str, *, required: bool = True, minimum: int | None = None) -> int | None:
    raw = params.get(name)
    if raw in (None, ""):
        if required:
            raise StripeError(400, f"Missing required param: {name}.", param=name, code="parameter_missing")
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise StripeError(400, f"Invalid integer: {raw}", param=name, code="parameter_invalid_integer") from None
    if minimum is not None and value < minimum:
        raise StripeError(400, f"{name} must be at least {minimum}.", param=name, code="parameter_invalid_integer")
    return value


def _required(params: dict, name: str) -> str:
    value = params.get(name)
    if value in (None, ""):
        raise StripeError(400, f"Missing required param: {name}.", param=name, code="parameter_missing")
    return value


class FakeStripe:
    """The store, the rules and the control state. One instance per server."""

    def __init__(self):
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.objects: dict[str, dict[str, dict]] = {kind: {} for kind in PREFIXES}
            self.idempotent: dict[tuple[str, str], dict] = {}
            self.requests: list[dict] = []
            self.failures: list[dict] = []

    # --- helpers ------------------------------------------------------------------------------
    def _new_id(self, kind: str) -> str:
        return PREFIXES[kind] + secrets.token_hex(8)

    def _store(self, kind: str, obj: dict) -> dict:
        obj.setdefault("id", self._new_id(kind))
        obj["object"] = kind
        obj.setdefault("created", int(time.time()))
        obj.setdefault("livemode", False)
        self.objects[kind][obj["id"]] = obj
        return obj

    def _get(self, kind: str, object_id: str) -> dict:
        obj = self.objects[kind].get(object_id)
        if obj is None:
            raise StripeError(404, f"No such {kind}: '{object_id}'", param="id", code="resource_missing")
        return obj

    @staticmethod
    def _list(items: list[dict], url: str) -> dict:
        return {"object": "list", "data": items, "has_more": False, "url": url}

    @staticmethod
    def _page(items: list[dict], url: str, params: dict) -> dict:
        """One page of a list endpoint: ``items`` (oldest first) filtered by ``created``, newest first,
        cut by ``starting_after`` / ``ending_before`` and ``limit``, as Stripe pages."""
        created = params.get("created")
        if isinstance(created, dict):
            checks = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
            for name, bound in created.items():
                if name not in checks:
                    raise StripeError(400, f"Invalid created filter: {name}", param="created")
                items = [i for i in items if checks[name](i["created"], int(bound))]
        elif created not in (None, ""):
            items = [i for i in items if i["created"] == int(created)]
        items = items[::-1]
        limit = _int(params, "limit", required=False, minimum=1) or 10
        ids = [i["id"] for i in items]
        if params.get("starting_after"):
            if params["starting_after"] not in ids:
                raise StripeError(400, "Invalid starting_after id.", param="starting_after")
            items = items[ids.index(params["starting_after"]) + 1 :]
            return {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": url}
        if params.get("ending_before"):
            if params["ending_before"] not in ids:
                raise StripeError(400, "Invalid ending_before id.", param="ending_before")
            items = items[: ids.index(params["ending_before"])]
            return {"object": "list", "data": items[-limit:], "has_more": len(items) > limit, "url": url}
        return {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": url}

    def expire_idempotency_keys(self, older_than_seconds: float = 0) -> int:
        """Forget stored idempotent results first stored more than ``older_than_seconds`` ago."""
        with self.lock:
            cutoff = time.time() - older_than_seconds
            expired = [key for key, stored in self.idempotent.items() if stored["stored_at"] <= cutoff]
            for key in expired:
                del self.idempotent[key]
            return len(expired)

    def take_failure(self, method: str, path: str) -> dict | None:
        with self.lock:
            for failure in self.failures:
                if failure["times"] > 0 and path.startswith(failure["path"]) and failure["method"] in (method, "*"):
                    failure["times"] -= 1
                    return dict(failure)
        return None

    # --- API ----------------------------------------------------------------------------------
    def handle(self, method: str, path: str, params: dict) -> tuple[int, dict]:
        parts = [p for p in path.split("/") if p][1:]  # drop "v1"
        route = (method, *("{id}" if i % 2 else p for i, p in enumerate(parts)))
        ids = parts[1::2]
        handler = ROUTES.get(route)
        if handler is None:
            raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")
        return 200, handler(self, params, *ids)

    def account_create(self, params):
        return self._store(
            "account",
            {
                "type": params.get("type", "express"),
                "email": params.get("email"),
                "country": params.get("country", "US"),
                "metadata": params.get("metadata", {}),
                "charges_enabled": False,
                "payouts_enabled": False,
                "details_submitted": False,
            },
        )

    def account_preload(self, account_id: str) -> dict:
        """A Connect account under a chosen id, onboarded (transfers allowed): demo data refers to it by id."""
        with self.lock:
            return self._store(
                "account",
                {
                    "id": account_id,
                    "type": "express",
                    "email": None,
                    "country": "US",
                    "metadata": {},
                    "charges_enabled": True,
                    "payouts_enabled": True,
                    "details_submitted": True,
                },
            )

    def account_get(self, params, account_id):
        return self._get("account", account_id)

    def account_link_create(self, params):
        account = self._get("account", _required(params, "account"))
        link_type = _required(params, "type")
        if link_type not in ("account_onboarding", "account_update"):
            raise StripeError(400, f"Invalid type: {link_type}", param="type")
        now = int(time.time())
        return {
            "object": "account_link",
            "created": now,
            "expires_at": now + 300,
            "url": f"https://connect.stripe.invalid/setup/e/{account['id']}/{secrets.token_hex(8)}",
        }

    def transfer_create(self, params):
        amount = _int(params, "amount", minimum=1)
        currency = _required(params, "currency").lower()
        destination = _required(params, "destination")
        if destination not in self.objects["account"]:
            raise StripeError(
                400, f"No such destination: '{destination}'", param="destination", code="resource_missing"
            )
        transfer = self._store(
            "transfer",
            {
                "amount": amount,
                "amount_reversed": 0,
                "currency": currency,
                "destination": destination,
                "description": params.get("description"),
                "metadata": params.get("metadata", {}),
                "transfer_group": params.get("transfer_group"),
                "reversed": False,
            },
        )
        transfer["reversals"] = self._list([], f"/v1/transfers/{transfer['id']}/reversals")
        return transfer

    def transfer_list(self, params):
        items = list(self.objects["transfer"].values())
        for name in ("destination", "transfer_group"):
            if params.get(name):
                items = [t for t in items if t[name] == params[name]]
        return self._page(items, "/v1/transfers", params)

    def transfer_get(self, params, transfer_id):
        return self._get("transfer", transfer_id)

    def transfer_reversal_create(self, params, transfer_id):
        transfer = self._get("transfer", transfer_id)
        remaining = transfer["amount"] - transfer["amount_reversed"]
        amount = _int(params, "amount", required=False, minimum=1) or remaining
        if amount > remaining:
            raise StripeError(400, "Amount exceeds the transfer's unreversed amount.", param="amount")
        reversal = self._store(
            "transfer_reversal",
            {
                "amount": amount,
                "currency": transfer["currency"],
                "transfer": transfer_id,
                "metadata": params.get("metadata", {}),
            },
        )
        transfer["amount_reversed"] += amount
        transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
        transfer["reversals"]["data"].append(reversal)
        return reversal

    def transfer_reversal_list(self, params, transfer_id):
        return self._get("transfer", transfer_id)["reversals"]

    def customer_create(self, params):
        return self._store(
            "customer",
            {
                "email": params.get("email"),
                "name": params.get("name"),
                "balance": 0,
                "currency": None,
                "metadata": params.get("metadata", {}),
            },
        )

    def customer_get(self, params, customer_id):
        return self._get("customer", customer_id)

    def balance_transaction_create(self, params, customer_id):
        customer = self._get("customer", customer_id)
        amount = _int(params, "amount")
        if amount == 0:
            raise StripeError(400, "Amount must not be zero.", param="amount")
        currency = _required(params, "currency").lower()
        if customer["currency"] and customer["currency"] != currency:
            raise StripeError(400, f"Customer currency is {customer['currency']}.", param="currency")
        customer["currency"] = currency
        customer["balance"] += amount
        return self._store(
            "customer_balance_transaction",
            {
                "amount": amount,
                "currency": currency,
                "customer": customer_id,
                "description": params.get("description"),
                "ending_balance": customer["balance"],
                "metadata": params.get("metadata", {}),
                "type": "adjustment",
            },
        )

    def balance_transaction_list(self, params, customer_id):
        self._get("customer", customer_id)
        items = [t for t in self.objects["customer_balance_transaction"].values() if t["customer"] == customer_id]
        return self._page(items, f"/v1/customers/{customer_id}/balance_transactions", params)

    def coupon_create(self, params):
        percent_off = params.get("percent_off")
        amount_off = _int(params, "amount_off", required=False, minimum=1)
        if (percent_off is None) == (amount_off is None):
            raise StripeError(400, "Provide exactly one of percent_off or amount_off.", param="percent_off")
        if amount_off is not None and not params.get("currency"):
            raise StripeError(400, "currency is required with amount_off.", param="currency")
        duration = params.get("duration", "once")
        if duration not in ("once", "repeating", "forever"):
            raise StripeError(400, f"Invalid duration: {duration}", param="duration")
        months = _int(params, "duration_in_months", required=duration == "repeating", minimum=1)
        coupon_id = params.get("id") or secrets.token_hex(4).upper()
        if coupon_id in self.objects["coupon"]:
            raise StripeError(400, "Coupon already exists.", param="id", code="resource_already_exists")
        return self._store(
            "coupon",
            {
                "id": coupon_id,
                "percent_off": float(percent_off) if percent_off is not None else None,
                "amount_off": amount_off,
                "currency": (params.get("currency") or "").lower() or None,
                "duration": duration,
                "duration_in_months": months,
                "max_redemptions": _int(params, "max_redemptions", required=False),
                "name": params.get("name"),
                "metadata": params.get("metadata", {}),
                "valid": True,
                "times_redeemed": 0,
            },
        )

    def balance_get(self, params):
        """The account's balance: nothing available in the fake (used to verify a secret key)."""
        return {
            "object": "balance",
            "livemode": False,
            "available": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
            "pending": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
        }

    def coupon_get(self, params, coupon_id):
        return self._get("coupon", coupon_id)

    def coupon_list(self, params):
        return self._page(list(self.objects["coupon"].values()), "/v1/coupons", params)

    def promotion_code_create(self, params):
        promotion = params.get("promotion") or {}
        coupon = self._get("coupon", promotion.get("coupon") or _required(params, "coupon"))
        customer = params.get("customer")
        if customer:
            self._get("customer", customer)
        return self._store(
            "promotion_code",
            {
                "code": params.get("code") or secrets.token_hex(4).upper(),
                "promotion": {"type": "coupon", "coupon": coupon["id"]},
                "customer": customer,
                "max_redemptions": _int(params, "max_redemptions", required=False),
                "active": True,
                "metadata": params.get("metadata", {}),
            },
        )

    def subscription_create(self, params):
        customer = self._get("customer", _required(params, "customer"))
        return self._store(
            "subscription",
            {"customer": customer["id"], "status": "active", "discounts": [], "metadata": params.get("metadata", {})},
        )

    def subscription_get(self, params, subscription_id):
        return self._get("subscription", subscription_id)

    def subscription_list(self, params):
        items = list(self.objects["subscription"].values())
        for name in ("customer", "status"):
            if params.get(name):
                items = [s for s in items if s[name] == params[name]]
        return self._page(items, "/v1/subscriptions", params)

    def subscription_update(self, params, subscription_id):
        """``discounts``: the complete list, each ``{"coupon": id}`` (a new discount) or ``{"discount": id}``
        (keep one the subscription has), as Stripe takes it."""
        subscription = self._get("subscription", subscription_id)
        if "discounts" in params:
            current = {d["id"]: d for d in subscription["discounts"]}
            discounts = []
            for entry in params["discounts"] or []:
                if entry.get("discount"):
                    if entry["discount"] not in current:
                        raise StripeError(400, f"No such discount: '{entry['discount']}'", param="discounts")
                    discounts.append(current[entry["discount"]])
                else:
                    coupon = self._get("coupon", _required(entry, "coupon"))
                    discounts.append({"id": self._new_id("discount"), "object": "discount", "coupon": coupon})
            subscription["discounts"] = discounts
        return subscription

    def promotion_code_list(self, params):
        items = list(self.objects["promotion_code"].values())
        if params.get("coupon"):
            items = [p for p in items if p["promotion"]["coupon"] == params["coupon"]]
        for name in ("customer", "code"):
            if params.get(name):
                items = [p for p in items if p[name] == params[name]]
        if params.get("active") in ("true", "false"):
            items = [p for p in items if p["active"] == (params["active"] == "true")]
        return self._page(items, "/v1/promotion_codes", params)


ROUTES = {
    ("POST", "accounts"): FakeStripe.account_create,
    ("GET", "accounts", "{id}"): FakeStripe.account_get,
    ("POST", "account_links"): FakeStripe.account_link_create,
    ("POST", "transfers"): FakeStripe.transfer_create,
    ("GET", "transfers"): FakeStripe.transfer_list,
    ("GET", "transfers", "{id}"): FakeStripe.transfer_get,
    ("POST", "transfers", "{id}", "reversals"): FakeStripe.transfer_reversal_create,
    ("GET", "transfers", "{id}", "reversals"): FakeStripe.transfer_reversal_list,
    ("POST", "customers"): FakeStripe.customer_create,
    ("GET", "customers", "{id}"): FakeStripe.customer_get,
    ("POST", "customers", "{id}", "balance_transactions"): FakeStripe.balance_transaction_create,
    ("GET", "customers", "{id}", "balance_transactions"): FakeStripe.balance_transaction_list,
    ("GET", "balance"): FakeStripe.balance_get,
    ("POST", "coupons"): FakeStripe.coupon_create,
    ("GET", "coupons"): FakeStripe.coupon_list,
    ("GET", "coupons", "{id}"): FakeStripe.coupon_get,
    ("POST", "promotion_codes"): FakeStripe.promotion_code_create,
    ("GET", "promotion_codes"): FakeStripe.promotion_code_list,
    ("POST", "subscriptions"): FakeStripe.subscription_create,
    ("GET", "subscriptions"): FakeStripe.subscription_list,
    ("GET", "subscriptions", "{id}"): FakeStripe.subscription_get,
    ("POST", "subscriptions", "{id}"): FakeStripe.subscription_update,
}


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-stripe/1"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive clients: no 40 ms stall per answer (referral_platform/devserver.py)

    @property
    def fake(self) -> FakeStripe:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, format, *args):  # quiet
        return

    def _send(self, status: int, body: Any, headers: dict | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", "req_" + secrets.token_hex(8))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> str:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length).decode() if length else ""

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._body()
        if url.path.startswith("/_control/"):
            return self._control(method, url.path, body)
        params = parse_form(body if method == "POST" else url.query)
        self._api(method, url.path, params)

    def _control(self, method: str, path: str, body: str) -> None:
        fake = self.fake
        with fake.lock:
            if method == "POST" and path == "/_control/fail":
                spec = json.loads(body or "{}")
                fake.failures.append(
                    {
                        "path": spec.get("path", "/v1/"),
                        "method": spec.get("method", "POST"),
                        "times": int(spec.get("times", 1)),
                        "status": int(spec.get("status", 500)),
                        "mode": spec.get("mode", "error"),
                        "seconds": float(spec.get("seconds", 60)),
                    }
                )
                return self._send(200, {"ok": True})
            if method == "GET" and path == "/_control/requests":
                return self._send(200, {"requests": list(fake.requests)})
            if method == "GET" and path.startswith("/_control/objects/"):
                kind = path.rsplit("/", 1)[-1]
                return self._send(200, {"data": list(fake.objects.get(kind, {}).values())})
            if method == "POST" and path == "/_control/expire_idempotency_keys":
                spec = json.loads(body or "{}")
                expired = fake.expire_idempotency_keys(float(spec.get("older_than_seconds", 0)))
                return self._send(200, {"expired": expired})
            if method == "POST" and path == "/_control/reset":
                fake.reset()
                return self._send(200, {"ok": True})
        self._send(404, {"error": {"type": "invalid_request_error", "message": "Unknown control endpoint."}})

    def _api(self, method: str, path: str, params: dict) -> None:
        fake = self.fake
        auth = self.headers.get("Authorization", "")
        api_key = auth[7:] if auth.startswith("Bearer ") else ""
        idempotency_key = self.headers.get("Idempotency-Key") or ""
        record = {
            "method": method,
            "path": path,
            "params": params,
            "idempotency_key": idempotency_key,
            "api_key_suffix": api_key[-4:],
            "status": None,
            "replayed": False,
        }
        with fake.lock:
            fake.requests.append(record)
        if not api_key.startswith("sk_"):
            record["status"] = 401
            return self._send(401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided."}})
        failure = fake.take_failure(method, path)
        if failure and failure["mode"] in ("hang", "close", "error"):
            return self._misbehave(record, failure)

        status, body, replayed = self._execute(method, path, params, api_key, idempotency_key)
        record["status"], record["replayed"] = status, replayed
        if failure:  # hang_after / close_after: executed and stored, but the caller never hears
            return self._misbehave(record, failure)
        self._send(status, body, {"Idempotent-Replayed": "true"} if replayed else None)

    def _execute(self, method, path, params, api_key, idempotency_key) -> tuple[int, dict, bool]:
        fake = self.fake
        fingerprint = hashlib.sha256(json.dumps([method, path, params], sort_keys=True).encode()).hexdigest()
        with fake.lock:
            if idempotency_key and method == "POST":
                stored = fake.idempotent.get((api_key, idempotency_key))
                if stored is not None:
                    if stored["fingerprint"] != fingerprint:
                        return (
                            400,
                            {
                                "error": {
                                    "type": "idempotency_error",
                                    "message": (
                                        "Keys for idempotent requests can only be used with the same parameters "
                                        f"they were first used with. Try using a key other than '{idempotency_key}' "
                                        "if you meant to execute a different request."
                                    ),
                                }
                            },
                            False,
                        )
                    return stored["status"], stored["body"], True
            try:
                status, body = fake.handle(method, path, params)
            except StripeError as error:
                status, body = error.status, error.body
            if idempotency_key and method == "POST":
                fake.idempotent[(api_key, idempotency_key)] = {
                    "fingerprint": fingerprint,
                    "status": status,
                    "body": body,
                    "stored_at": time.time(),
                }
            return status, body, False

    def _misbehave(self, record: dict, failure: dict) -> None:
        mode = failure["mode"]
        if mode == "error":
            record["status"] = failure["status"]
            return self._send(
                failure["status"], {"error": {"type": "api_error", "message": "Injected failure (fake Stripe)."}}
            )
        if mode.startswith("hang"):
            record["status"] = record["status"] or "hung"
            deadline = time.monotonic() + failure["seconds"]
            while time.monotonic() < deadline and not self.server.stopping:  # type: ignore[attr-defined]
                time.sleep(0.05)
        record["status"] = record["status"] or "closed"
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeStripeServer:
    """The running server: ``url`` to point the stripe library at, ``stop()`` to end it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.fake = FakeStripe()
        self.httpd = _Server((host, port), _Handler)
        self.httpd.fake = self.fake  # type: ignore[attr-defined]
        self.httpd.stopping = False  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-stripe", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeStripeServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.stopping = True  # type: ignore[attr-defined]
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def start(port: int = 0) -> FakeStripeServer:
    """Start a server on 127.0.0.1 (a free port unless ``port`` is given) in a background thread."""
    return FakeStripeServer(port=port).start()
