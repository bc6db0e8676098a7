"""What the in-process benchmarks share: a progress bar, and a throw-away database to run in (created with
migrations under the test settings — the restricted role, row-level security in force — dropped at the end)."""

from __future__ import annotations

import os
from collections.abc import Callable

from referral_platform.console import progress_bar

progress = progress_bar  # label, done, total (the demo seed's bar)


def in_scratch_database(name: str, run: Callable[[], None]) -> None:
    """``run()`` in a new database ``<name>_<pid>``, dropped afterwards whatever happens."""
    import django

    django.setup()
    from django.db import connection

    connection.settings_dict["TEST"]["NAME"] = f"{name}_{os.getpid()}"
    print(f"[{name}] creating a scratch database ({connection.settings_dict['TEST']['NAME']})", flush=True)
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        run()
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def as_owner(sql: str) -> None:
    """Run ``sql`` as the database owner (ANALYZE, DROP INDEX: the owner's right), then go back to the restricted
    role the benchmark runs as."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        role = cursor.fetchone()[0]
        cursor.execute(f'RESET ROLE; {sql}; SET ROLE "{role}"')
