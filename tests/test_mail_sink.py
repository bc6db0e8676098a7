"""`make run`'s local SMTP server (scripts/mail_sink.py) keeps every e-mail Django sends as a .eml file."""

from __future__ import annotations

import email
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.core.mail import get_connection, send_mail

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the mail sink did not start")


def test_the_mail_sink_keeps_each_mail_django_sends_as_an_eml_file(tmp_path):
    port = _free_port()
    sink = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "mail_sink.py"), "--port", str(port), "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_listening(port)
        smtp = get_connection("django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=port)
        send_mail("Your invitation", "Share your link.", "from@example.com", ["ada@example.com"], connection=smtp)
        for _ in range(50):
            files = list(tmp_path.glob("*.eml"))
            if files:
                break
            time.sleep(0.1)
    finally:
        sink.terminate()
        output, _ = sink.communicate(timeout=10)

    assert len(files) == 1
    message = email.message_from_bytes(files[0].read_bytes())
    assert message["Subject"] == "Your invitation" and message["To"] == "ada@example.com"
    assert "Share your link." in message.get_payload()
    assert "[mail] to ada@example.com: Your invitation" in output
