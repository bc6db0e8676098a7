"""Talk to the fake server's /_control endpoints (tests and benchmarks)."""

from __future__ import annotations

import json
from urllib.request import Request, urlopen


class StripeControl:
    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = Request(  # noqa: S310 - http(s) to the loopback test server only
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    def reset(self) -> None:
        self._call("POST", "/_control/reset", {})

    def fail(
        self,
        path: str,
        *,
        times: int = 1,
        status: int = 500,
        mode: str = "error",
        method: str = "POST",
        seconds: float = 60,
    ) -> None:
        self._call(
            "POST",
            "/_control/fail",
            {"path": path, "times": times, "status": status, "mode": mode, "method": method, "seconds": seconds},
        )

    def expire_idempotency_keys(self, *, older_than_seconds: float = 0) -> int:
        """Make the server forget idempotency keys (as Stripe does after ~24 h); returns how many."""
        return self._call("POST", "/_control/expire_idempotency_keys", {"older_than_seconds": older_than_seconds})[
            "expired"
        ]

    def requests(self, path: str | None = None, method: str | None = None) -> list[dict]:
        rows = self._call("GET", "/_control/requests")["requests"]
        return [r for r in rows if (path is None or r["path"] == path) and (method is None or r["method"] == method)]

    def objects(self, kind: str) -> list[dict]:
        return self._call("GET", f"/_control/objects/{kind}")["data"]
