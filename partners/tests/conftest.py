from __future__ import annotations

import pytest

# The project-wide fixtures (tests/conftest.py) for the app's own tests.
from tests.conftest import TenantWorld, _isolated_cache, celery_eager, world  # noqa: F401


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """Uploaded resource files go to a per-test directory."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(scope="session")
def stripe_server():
    """The fake Stripe server (referral_platform/stripe_fake) for the payout set-up page."""
    from referral_platform.stripe_fake import start

    server = start()
    yield server
    server.stop()


@pytest.fixture
def stripe(stripe_server, settings):
    from referral_platform.stripe_fake import StripeControl

    control = StripeControl(stripe_server.url)
    control.reset()
    settings.STRIPE_API_BASE = stripe_server.url
    return control
