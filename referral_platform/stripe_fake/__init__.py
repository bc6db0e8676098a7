"""A Stripe-compatible server for tests and benchmarks (see server.py) and a client for its controls."""

from .control import StripeControl
from .server import FakeStripeServer, start

__all__ = ["FakeStripeServer", "StripeControl", "start"]
