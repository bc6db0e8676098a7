from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """seed_demo uploads the partner resource library: its files go to a per-test directory."""
    settings.MEDIA_ROOT = tmp_path / "media"
