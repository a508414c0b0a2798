"""A gate on one endpoint: crash points for tests that do not depend on the machine's speed.

A test that kills a client "while it is sending" cannot do so by sleeping and hoping:
on a fast machine the client has finished, on a slow one it has not begun. The gate
lets the first `let_through` requests to `path` run, then holds every later one until
the test says what becomes of it, and tells the test (`wait_held`) when it is holding
some, so the test kills its client at exactly that point:

* `hold="before"`: held before the endpoint runs. Stripe has recorded nothing; released
  with `release(run=False)` the request is dropped unanswered, still unrecorded (a send
  that never landed); with `release()` it runs as if it had only been slow.
* `hold="after"`: held after the endpoint ran and its answer was stored under its
  Idempotency-Key, before the answer goes out: Stripe has the event, the client never
  hears so (a crash between Stripe's success and the client's bookkeeping).

The gate sits just outside the idempotency stage, so a request it drops unrun stores
no answer for its key, as on Stripe. After `release` it lets everything through.

    gate = RequestGate("/v1/billing/meter_events", let_through=3, hold="after")
    emulator.app.use(gate, name="gate", before="idempotency")
    ...start the client...
    assert gate.wait_held(timeout=60)
    ...kill the client...
    gate.release()
"""

from __future__ import annotations

import threading

from .context import ApiResponse, Ctx
from .faults import drop_connection, server_error

HOLD_POINTS = ("before", "after")


class RequestGate:
    def __init__(self, path: str, *, let_through: int = 0, hold: str = "before"):
        if hold not in HOLD_POINTS:
            raise ValueError(f"hold must be one of {HOLD_POINTS}, not {hold!r}")
        self.path = path
        self.let_through = let_through
        self.hold = hold
        self.__name__ = f"gate {path}"
        self._cond = threading.Condition()
        self._open = False
        self._run_held = True
        # Identifiers (the form's `identifier`, when given) of what went through and
        # what is held, in arrival order: what the test can check in its own ledger.
        self.passed: list[str] = []
        self.held: list[str] = []

    def __call__(self, ctx: Ctx, call_next) -> ApiResponse:
        if ctx.path != self.path:
            return call_next()
        identifier = str(ctx.params.get("identifier", ""))
        with self._cond:
            admitted = self._open or len(self.passed) < self.let_through
            if admitted:
                self.passed.append(identifier)
        if admitted:
            return call_next()
        if self.hold == "after":
            response = call_next()
            self._wait_for_release(identifier)
            return response
        if not self._wait_for_release(identifier):
            drop_connection(ctx)
            return server_error(ctx, "Dropped by the emulator's gate: nothing was recorded.")
        return call_next()

    def _wait_for_release(self, identifier: str) -> bool:
        """Hold the calling request until `release`; whether it may run."""
        with self._cond:
            self.held.append(identifier)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._open)
            return self._run_held

    def wait_held(self, count: int = 1, *, timeout: float = 60.0) -> bool:
        """Until at least `count` requests are held (True) or `timeout` seconds pass."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.held) >= count, timeout)

    def release(self, *, run: bool = True) -> None:
        """Let the held requests go (run, or, for `hold="before"`, drop them unrun) and
        every later request through."""
        with self._cond:
            self._open, self._run_held = True, run
            self._cond.notify_all()

