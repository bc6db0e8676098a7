from __future__ import annotations

import pytest

# The project-wide fixtures (tests/conftest.py) for the app's own tests.
from tests.conftest import TenantWorld, _isolated_cache, celery_eager, world  # noqa: F401


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """Uploaded resource files go to a per-test directory."""
    settings.MEDIA_ROOT = tmp_path / "media"
