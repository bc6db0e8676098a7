from tests.conftest import _isolated_cache, world  # noqa: F401 - the two-tenant world, clean cache
