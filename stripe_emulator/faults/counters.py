"""What the emulator counted: requests and responses by status and path, 429s by
reason, injected faults, in-flight peaks (overall, for meter event calls, and
per (mode, customer, event name) key), and v2 stream events.

Every change goes through a method of `Counters`, under its one lock, so the
stages never touch another object's internals and a snapshot (`snapshot()`,
the control API's `GET /_emulator/stats`) is consistent. Peaks are counted
whether or not the one-call-per-key rule is enforced, so a test can check that
a client never overlaps calls for one customer and meter.
"""

from __future__ import annotations

import threading
from typing import Dict, Optional


class Counters:
    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._by_status: Dict[str, int] = {}
            self._by_path: Dict[str, int] = {}
            self._rate_limited: Dict[str, int] = {}
            self._injected: Dict[str, int] = {}
            self._requests = 0
            self._in_flight = 0
            self._peak_in_flight = 0
            self._meter_events_in_flight = 0
            self._peak_meter_events = 0
            self._key_in_flight: Dict[str, int] = {}
            self._peak_by_key: Dict[str, int] = {}
            self._v2_events: Dict[str, int] = {"received": 0, "duplicates": 0}

    # --- requests --------------------------------------------------------------------

    def request_started(self, method: str, path: str) -> None:
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            key = f"{method} {path}"
            self._by_path[key] = self._by_path.get(key, 0) + 1

    def request_finished(self, status: str) -> None:
        with self._lock:
            self._in_flight -= 1
            self._by_status[status] = self._by_status.get(status, 0) + 1

    def rate_limited(self, reason: str) -> None:
        with self._lock:
            self._rate_limited[reason] = self._rate_limited.get(reason, 0) + 1

    def injected(self, fault: str) -> None:
        with self._lock:
            self._injected[fault] = self._injected.get(fault, 0) + 1

    # --- meter event calls in flight ---------------------------------------------------

    def meter_event_started(self, key: Optional[str], *, exclusive: bool) -> bool:
        """Count a v1 meter event call in; False (nothing counted) if `exclusive` and a
        call for the same key is already in flight."""
        with self._lock:
            if key is not None and exclusive and self._key_in_flight.get(key, 0) >= 1:
                return False
            self._meter_events_in_flight += 1
            self._peak_meter_events = max(self._peak_meter_events,
                                          self._meter_events_in_flight)
            if key is not None:
                n = self._key_in_flight.get(key, 0) + 1
                self._key_in_flight[key] = n
                self._peak_by_key[key] = max(self._peak_by_key.get(key, 0), n)
            return True

    def meter_event_finished(self, key: Optional[str]) -> None:
        with self._lock:
            self._meter_events_in_flight -= 1
            if key is not None:
                n = self._key_in_flight.get(key, 1) - 1
                if n:
                    self._key_in_flight[key] = n
                else:
                    self._key_in_flight.pop(key, None)

    def count_v2(self, received: int, duplicates: int) -> None:
        with self._lock:
            self._v2_events["received"] += received
            self._v2_events["duplicates"] += duplicates

    # --- reading -------------------------------------------------------------------------

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "requests": self._requests,
                "by_status": dict(sorted(self._by_status.items())),
                "by_path": dict(sorted(self._by_path.items())),
                "rate_limited": dict(sorted(self._rate_limited.items())),
                "rate_limited_total": sum(self._rate_limited.values()),
                "faults_injected": dict(sorted(self._injected.items())),
                "in_flight": self._in_flight,
                "peak_concurrency": {
                    "overall": self._peak_in_flight,
                    "meter_events": self._peak_meter_events,
                    "max_per_key": max(self._peak_by_key.values(), default=0),
                    "by_key": dict(sorted(self._peak_by_key.items())),
                },
                "v2_stream_events": dict(self._v2_events),
            }
