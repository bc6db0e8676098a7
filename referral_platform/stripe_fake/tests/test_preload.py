"""`python -m referral_platform.stripe_fake --account acct_x`: the demo's connected account can receive a transfer."""

import socket
import subprocess
import sys
import time

import stripe


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_preloaded_account_receives_a_transfer_through_the_stripe_library():
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "referral_platform.stripe_fake",
            "--port",
            str(port),
            "--account",
            "acct_demo_connected",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening" in process.stdout.readline()
        client = stripe.StripeClient("sk_test_demo", base_addresses={"api": f"http://127.0.0.1:{port}"})
        deadline = time.monotonic() + 10
        while True:
            try:
                account = client.accounts.retrieve("acct_demo_connected")
                break
            except stripe.APIConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        transfer = client.transfers.create(
            params={"amount": 2500, "currency": "usd", "destination": "acct_demo_connected"}
        )

        assert account.payouts_enabled is True
        assert transfer.destination == "acct_demo_connected" and transfer.amount == 2500
        try:
            client.transfers.create(params={"amount": 100, "currency": "usd", "destination": "acct_unknown"})
            raise AssertionError("a transfer to an unknown account must be refused")
        except stripe.InvalidRequestError as error:
            assert "No such destination" in str(error)
    finally:
        process.terminate()
        process.wait(timeout=10)
