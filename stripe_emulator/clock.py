"""The emulator's notion of "now".

Every time-dependent rule (created timestamps, the meter-event timestamp
window, the 24h identifier dedupe window, idempotency-key expiry, billing
periods) reads `Clock.now()`, so tests can move time instead of sleeping.

Modes: real time plus an offset (the default, offset 0), or frozen at an
instant. Stripe test clocks are per-customer frozen times layered on top
(resources/test_clocks.py, billing_cycle.customer_now).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional


class Clock:
    def __init__(self, source: Callable[[], float] = time.time):
        self._source = source
        self._lock = threading.Lock()
        self._offset = 0
        self._frozen: Optional[int] = None

    def now(self) -> int:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return int(self._source()) + self._offset

    def set(self, ts: int, freeze: Optional[bool] = None) -> int:
        """Jump to `ts`. Keeps the current mode unless `freeze` says otherwise."""
        ts = int(ts)
        with self._lock:
            frozen = self._frozen is not None if freeze is None else freeze
            if frozen:
                self._frozen = ts
            else:
                self._frozen = None
                self._offset = ts - int(self._source())
        return ts

    def freeze(self, ts: Optional[int] = None) -> int:
        return self.set(self.now() if ts is None else ts, freeze=True)

    def unfreeze(self) -> int:
        """Let time run again from the current (possibly shifted) instant."""
        return self.set(self.now(), freeze=False)

    def advance(self, seconds: int) -> int:
        return self.set(self.now() + int(seconds))

    def reset(self) -> None:
        with self._lock:
            self._offset = 0
            self._frozen = None

    @property
    def frozen(self) -> bool:
        return self._frozen is not None

    def state(self) -> dict:
        with self._lock:
            return {"offset": self._offset, "frozen_at": self._frozen}

    def load_state(self, state: dict) -> None:
        with self._lock:
            self._offset = int(state.get("offset") or 0)
            frozen = state.get("frozen_at")
            self._frozen = None if frozen is None else int(frozen)

    def describe(self) -> dict:
        now = self.now()
        st = self.state()
        return {
            "now": now,
            "frozen": st["frozen_at"] is not None,
            "offset": st["offset"] if st["frozen_at"] is None else now - int(self._source()),
            "real_now": int(self._source()),
        }
