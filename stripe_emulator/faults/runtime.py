"""The fault state a running emulator holds: the configuration in force, the
seeded RNG that decides each request's fault, Stripe-like token buckets, and
the counters.

Reconfiguring replaces the RNG and the buckets together with the
configuration (so a seeded run restarts its sequence), under one lock; one
uniform draw per selected request picks at most one fault, so a seeded run is
reproducible for a given order of requests.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from .config import FaultConfig
from .counters import Counters


class TokenBucket:
    """`rate` tokens a second, at most `rate` banked (a one-second burst)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.clock = clock
        self.tokens = rate
        self.stamp = clock()
        self.lock = threading.Lock()

    def take(self, n: float = 1.0) -> bool:
        with self.lock:
            now = self.clock()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            # A batch larger than the burst can still pass when the bucket is full.
            if self.tokens >= min(n, self.rate):
                self.tokens -= n
                return True
            return False


class Faults:
    """The configuration, the RNG, the buckets and the counters."""

    def __init__(self, config: Optional[FaultConfig] = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.initial = (config or FaultConfig()).validated()
        self.clock = clock
        self.sleep = sleep  # how injected latency waits (tests record it instead)
        self.counters = Counters()
        self._lock = threading.Lock()
        self.configure(self.initial)

    # --- configuration -------------------------------------------------------

    def configure(self, config: FaultConfig) -> FaultConfig:
        config = config.validated()
        with self._lock:
            self.config = config
            self.rng = random.Random(config.seed)
            self.buckets: Dict[str, TokenBucket] = {}
            for name, rate in (("test", config.rate_limit_test),
                               ("live_meter_events", config.rate_limit_live),
                               ("v2_test", config.rate_limit_v2_test),
                               ("v2_live", config.rate_limit_v2_live)):
                if rate > 0:
                    self.buckets[name] = TokenBucket(rate, self.clock)
        return config

    def set(self, **changes) -> FaultConfig:
        return self.configure(self.config.replace(**changes))

    def reset(self) -> None:
        """Back to the configuration the server started with; counters cleared."""
        self.configure(self.initial)
        self.reset_stats()

    # --- counters ----------------------------------------------------------------

    def reset_stats(self) -> None:
        self.counters.reset()

    def stats(self, store=None) -> dict:
        out = self.counters.snapshot()
        if store is not None:
            out["meter_events"] = store.meter_event_counts()
        return out

    # --- decisions -----------------------------------------------------------------

    def selected(self, path: str) -> bool:
        paths = self.config.paths
        if paths is None:
            return True
        path = path.rstrip("/") or "/"
        for p in paths:
            if p.endswith("*") and path.startswith(p[:-1]):
                return True
            if path == p.rstrip("/"):
                return True
        return False

    def draw(self) -> Tuple[Optional[str], float]:
        """(fault or None, latency seconds) for one selected request."""
        c = self.config
        with self._lock:
            u = self.rng.random()
            jitter = self.rng.random() * c.jitter_ms if c.jitter_ms else 0.0
        fault = None
        for name, p in (("429", c.rate_429), ("500", c.rate_500), ("lost", c.rate_lost),
                        ("timeout", c.rate_timeout),
                        ("timeout_recorded", c.rate_timeout_recorded)):
            if u < p:
                fault = name
                break
            u -= p
        return fault, (c.latency_ms + jitter) / 1000.0
