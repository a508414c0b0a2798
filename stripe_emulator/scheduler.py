"""The emulator's background thread for work no request waits for.

* jobs: test clocks advancing (submitted by the advance endpoint after its
  transaction commits), run one at a time in submission order;
* a tick every `tick` seconds that runs the billing cycle for customers on
  the emulator clock, so periods close and drafts finalize (and their
  webhooks go out) as real time passes even if nobody reads anything.
  `tick=None` turns that off; reads still settle lazily.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import traceback
from typing import Callable, Optional


class Scheduler:
    def __init__(self, store, tick: Optional[float] = 1.0):
        self.store = store
        self.tick = tick
        self._cv = threading.Condition()
        self._jobs: collections.deque = collections.deque()
        self._busy = False
        self._held = 0
        self._stopping = False
        self._next_tick = time.monotonic() + (tick or 0)
        self._tick_hooks: list = []   # more work for each tick (meter event validation)
        store.on_reset(self._drop_jobs)
        self._thread = threading.Thread(target=self._run, name="stripe-emulator-scheduler",
                                        daemon=True)
        self._thread.start()

    def on_tick(self, fn: Callable[[], None]) -> None:
        """Run `fn()` on every tick, after the billing cycle."""
        self._tick_hooks.append(fn)

    def submit(self, job: Callable[[], None]) -> None:
        with self._cv:
            self._jobs.append(job)
            self._cv.notify_all()

    @contextlib.contextmanager
    def hold(self):
        """Run nothing while inside (tests use it to see a clock `advancing`)."""
        with self._cv:
            self._held += 1
        try:
            yield
        finally:
            with self._cv:
                self._held -= 1
                self._cv.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no job is queued or running."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._jobs and not self._busy, timeout)

    def _drop_jobs(self) -> None:
        with self._cv:
            self._jobs.clear()
            self._cv.notify_all()

    def _run(self) -> None:
        from . import billing_cycle

        while True:
            with self._cv:
                while not self._stopping and (self._held or not self._jobs):
                    if not self._held and self.tick and time.monotonic() >= self._next_tick:
                        break
                    self._cv.wait(None if not self.tick
                                  else max(self._next_tick - time.monotonic(), 0.01))
                if self._stopping:
                    return
                job = self._jobs.popleft() if self._jobs else None
                self._busy = True
            try:
                if job is not None:
                    job()
                else:
                    self._next_tick = time.monotonic() + self.tick
                    billing_cycle.settle_all(self.store)
                    for fn in list(self._tick_hooks):
                        fn()
            except Exception:  # keep the thread alive; the failure is printed
                traceback.print_exc()
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout=5)
