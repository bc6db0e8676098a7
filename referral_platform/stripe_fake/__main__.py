"""``python -m referral_platform.stripe_fake --port 12111``: serve until interrupted."""

from __future__ import annotations

import argparse
import time

from .server import start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=12111)
    args = parser.parse_args()
    server = start(args.port)
    print(f"fake Stripe listening on {server.url} (STRIPE_API_BASE={server.url})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
