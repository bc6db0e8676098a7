"""The Hypothesis settings of the property tests that run against the real database (order independence,
batched against one-by-one equivalences): written once here, each test naming only what differs."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings


def database_examples(
    max_examples: int, *, phases: list[Phase] | None = None, health: tuple[HealthCheck, ...] = (), **options
) -> settings:
    """Settings for a property test whose examples each build workspaces in PostgreSQL: ``max_examples`` examples,
    the same ones on every run (``derandomize``: CI and a developer see the same failures), no example database
    on disk, no deadline (an example's time is the database's), and the health checks such tests always trip
    (slow data generation, function-scoped fixtures such as ``monkeypatch``) off, plus ``health``. ``phases``:
    Hypothesis's own unless given (e.g. without shrinking, which would rebuild workspaces for minutes). ``options``:
    any other setting, as ``settings`` takes it."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        **({"phases": phases} if phases is not None else {}),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, *health],
        **options,
    )


# Explicit examples and generation only: a failing example is reported as found (shrinking it would rebuild its
# workspaces over and over).
WITHOUT_SHRINKING = [Phase.explicit, Phase.generate]
