"""``python -m referral_platform.stripe_fake --port 12111 [--account acct_x ...]``: serve until interrupted.

``--account`` pre-creates a Connect account with that id, ready for transfers, so that a demo whose participants
already carry connected account ids (``make run``: the demo's ``acct_demo_connected``) can really be paid."""

from __future__ import annotations

import argparse
import time

from .server import start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--account", action="append", default=[], help="a Connect account id to create at start")
    args = parser.parse_args()
    server = start(args.port)
    for account_id in args.account:
        server.fake.account_preload(account_id)
    print(f"fake Stripe listening on {server.url} (STRIPE_API_BASE={server.url})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
