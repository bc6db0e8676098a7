"""A local SMTP server for `make run`: every e-mail the demo sends is kept as a .eml file (and its first
lines printed), so invitations, messages and test sends can be read without a real mail provider.

    python scripts/mail_sink.py --port 1025 --dir .run/mail
"""

from __future__ import annotations

import argparse
import email
import email.policy
import signal
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory: Path):
        self.directory = directory
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            number = self.count
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        path = self.directory / f"{time.strftime('%Y%m%d-%H%M%S')}-{number:04d}.eml"
        path.write_bytes(envelope.content)
        print(f"[mail] to {', '.join(envelope.rcpt_tos)}: {message['Subject']}  → {path}", flush=True)
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", default=".run/mail")
    args = parser.parse_args()
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(Sink(directory), hostname=args.host, port=args.port)
    controller.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    try:
        stopped.wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
