"""A local Stripe emulator: a small stateful HTTP server speaking Stripe's v1 wire
format (the subset Epsilon Billing uses), for offline development, the demo
and the tests. It is not Stripe: nothing is charged, nothing leaves the machine.

    python -m stripe_emulator --port 12111 --db var/stripe-emulator.sqlite3

or in-process: `EmulatorServer(port=0).start()`. The Django app never
imports this package; it only talks to it over HTTP.
"""

from .clock import Clock
from .server import EmulatorServer
from .store import Store

__all__ = ["Clock", "EmulatorServer", "Store"]
