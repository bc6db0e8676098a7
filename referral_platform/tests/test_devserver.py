"""referral_platform/devserver.py: the standard library's servers we run answer without Nagle's algorithm, so a
keep-alive client does not wait for a delayed ACK (40 ms) between a response's headers and its body."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import requests
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

ROOT = Path(__file__).resolve().parents[2]


def _nodelay_seen_by_server(handler_base: type[WSGIRequestHandler]) -> list[int]:
    seen: list[int] = []

    class Recording(handler_base):
        def setup(self):
            super().setup()
            seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        def log_message(self, *args):
            pass

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    server = ThreadedWSGIServer(("127.0.0.1", 0), Recording)
    server.set_app(app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with requests.Session() as session:
            for _ in range(2):
                assert session.get(f"http://127.0.0.1:{server.server_port}/").text == "ok"
    finally:
        server.shutdown()
        server.server_close()
    return seen


def test_djangos_server_sets_tcp_nodelay_on_each_connection_once_answer_without_delay_ran():
    # the root conftest ran answer_without_delay(); a subclass without the flag is the control
    assert WSGIRequestHandler.disable_nagle_algorithm is True
    assert all(_nodelay_seen_by_server(WSGIRequestHandler))

    class Plain(WSGIRequestHandler):
        disable_nagle_algorithm = False

    assert not any(_nodelay_seen_by_server(Plain))


def test_the_live_server_and_the_stripe_fake_inherit_or_set_the_flag():
    from django.test.testcases import QuietWSGIRequestHandler

    from referral_platform.stripe_fake.server import _Handler

    assert QuietWSGIRequestHandler.disable_nagle_algorithm is True
    assert _Handler.disable_nagle_algorithm is True


def test_manage_py_turns_it_on_for_runserver():
    probe = (
        "import sys; sys.argv = ['manage.py', 'check', '--deploy', '--fail-level', 'CRITICAL']\n"
        "import manage; manage.main()\n"
        "from django.core.servers.basehttp import WSGIRequestHandler\n"
        "print('nodelay', WSGIRequestHandler.disable_nagle_algorithm)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nodelay True" in result.stdout
