"""Webhook delivery: each event to each endpoint it was for, signed, retried.

Events are published by the store after their transaction commits; this
module turns each (event, endpoint) into a delivery, POSTed by one background
thread so API requests never wait for a receiver. A delivery succeeds on a
2xx answer; anything else (other status, connection error, timeout) is
retried after `retry_delays[n]` seconds (real time, not the emulator clock:
retries are about the receiver, not about billing time), then given up.
Every attempt is recorded (status code, error, duration).

Signature, as Stripe computes it: `Stripe-Signature: t=<unix time>,v1=<hex
HMAC-SHA256(secret, "<t>.<body>")>`, with `t` the real time of the attempt,
so `stripe.WebhookSignature.verify_header` (5 minute tolerance against the
receiver's clock) accepts it whatever the emulator or test clocks say.

Deliveries live in memory: a restarted emulator does not resend.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import threading
import time
import traceback
from typing import List, Optional, Sequence

import httpx

from . import ids, jsonutil

# Stripe retries for up to three days with exponential backoff.
DEFAULT_RETRY_DELAYS: Sequence[float] = (60, 300, 1800, 3600, 7200, 14400, 28800, 57600,
                                         86400, 86400)
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def signature_header(secret: str, payload: str, timestamp: Optional[int] = None) -> str:
    t = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


class WebhookDispatcher:
    def __init__(self, store, retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
                 timeout: float = 10.0):
        self.store = store
        self.retry_delays = tuple(float(d) for d in retry_delays)
        self.timeout = timeout
        self._cv = threading.Condition()
        self._queue: list = []           # (due monotonic time, seq, delivery id)
        self._seq = itertools.count()
        self._deliveries: dict = {}      # id -> delivery record, in creation order
        self._inflight = 0
        self._generation = 0             # bumped by reset: late results are dropped
        self._stopping = False
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)
        self._thread = threading.Thread(target=self._run, name="stripe-emulator-webhooks",
                                         daemon=True)
        store.subscribe(self._on_publish)
        store.on_reset(self.reset)
        self._thread.start()

    # --- intake ---------------------------------------------------------------

    def _on_publish(self, kind: str, payload: dict) -> None:
        if kind != "event":
            return
        event = payload["event"]
        body = jsonutil.dumps(event)
        with self._cv:
            for endpoint in payload["endpoints"]:
                delivery = {
                    "id": "whdel_" + ids.random_part(24), "event": event["id"],
                    "type": event["type"], "endpoint": endpoint["id"], "url": endpoint["url"],
                    "status": "pending", "attempts": [], "next_attempt_at": time.time(),
                    "created": time.time(), "_secret": endpoint["secret"], "_body": body,
                }
                self._deliveries[delivery["id"]] = delivery
                heapq.heappush(self._queue, (time.monotonic(), next(self._seq), delivery["id"]))
            self._cv.notify_all()

    # --- the worker -----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping:
                    if self._queue:
                        wait = self._queue[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._cv.wait(wait)
                    else:
                        self._cv.wait()
                if self._stopping:
                    return
                _, _, delivery_id = heapq.heappop(self._queue)
                delivery = self._deliveries.get(delivery_id)
                if delivery is None:
                    continue
                generation = self._generation
                self._inflight += 1
            try:
                attempt = self._attempt(delivery)
            except Exception:  # a bug here must not kill the worker
                traceback.print_exc()
                attempt = {"error": "emulator error", "status_code": None}
            delivered = False
            with self._cv:
                if generation == self._generation:
                    delivered = self._record(delivery, attempt)
            if delivered:  # outside our lock: this takes the store's
                self._delivered(delivery["event"])
            with self._cv:
                self._inflight -= 1
                self._cv.notify_all()

    def _attempt(self, delivery: dict) -> dict:
        body = delivery["_body"]
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT,
                   "Stripe-Signature": signature_header(delivery["_secret"], body)}
        started = time.monotonic()
        out = {"at": int(time.time()), "status_code": None, "error": None}
        try:
            resp = self._client.post(delivery["url"], content=body.encode("utf-8"),
                                     headers=headers)
            out["status_code"] = resp.status_code
            if not 200 <= resp.status_code < 300:
                out["error"] = f"HTTP {resp.status_code}"
        except httpx.HTTPError as e:
            out["error"] = f"{type(e).__name__}: {e}"
        out["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
        return out

    def _record(self, delivery: dict, attempt: dict) -> bool:
        """Note the attempt; schedule a retry if one is due. True if delivered."""
        delivery["attempts"].append(attempt)
        if attempt["error"] is None:
            delivery["status"], delivery["next_attempt_at"] = "succeeded", None
            return True
        n = len(delivery["attempts"])
        if n > len(self.retry_delays):
            delivery["status"], delivery["next_attempt_at"] = "failed", None
            return False
        delay = self.retry_delays[n - 1]
        delivery["status"], delivery["next_attempt_at"] = "retrying", time.time() + delay
        heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq), delivery["id"]))
        return False

    def _delivered(self, event_id: str) -> None:
        with self.store.transaction():
            event = self.store.get(event_id, "event")
            if event is not None and event["pending_webhooks"] > 0:
                event["pending_webhooks"] -= 1
                self.store.save(event)

    # --- for tests, the demo and the control API ---------------------------------

    def deliveries(self, event: Optional[str] = None, endpoint: Optional[str] = None,
                   status: Optional[str] = None, type: Optional[str] = None) -> List[dict]:
        with self._cv:
            out = [{k: v for k, v in d.items() if not k.startswith("_")}
                   | {"attempts": list(d["attempts"])} for d in self._deliveries.values()]
        return [d for d in out
                if (event is None or d["event"] == event)
                and (endpoint is None or d["endpoint"] == endpoint)
                and (status is None or d["status"] == status)
                and (type is None or d["type"] == type)]

    def pending(self) -> int:
        with self._cv:
            return len(self._queue) + self._inflight

    def flush(self, timeout: float = 10.0, include_retries: bool = True) -> bool:
        """Block until no delivery is queued or running (with `include_retries`
        false, until none is due now). True if that happened within `timeout`."""
        def idle():
            if self._inflight:
                return False
            if include_retries:
                return not self._queue
            return not self._queue or self._queue[0][0] > time.monotonic()
        with self._cv:
            return self._cv.wait_for(idle, timeout)

    def reset(self) -> None:
        with self._cv:
            self._queue.clear()
            self._deliveries.clear()
            self._generation += 1
            self._cv.notify_all()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout=5)
        self._client.close()
