# The project-wide fixtures (tests/conftest.py) for the app's own tests.
from tests.conftest import TenantWorld, _isolated_cache, celery_eager, world  # noqa: F401
