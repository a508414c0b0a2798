"""
Send meter events to Stripe as fast as Stripe allows, and no faster.

- A client-side rate limit (Stripe: 1,000 meter events/s live; sandboxes share the
  basic 25 requests/s), so a large run doesn't turn into a storm of 429s.
- At most one call in flight per customer and meter (Stripe's rule), but enough
  threads across customers to reach the limit.
- Retries with exponential backoff and jitter on 429s, 5xx and network errors, each
  attempt with its own Idempotency-Key (Stripe replays a key's first answer, a 500
  included); the meter event identifier is what deduplicates across attempts.

The threads only talk HTTP; the caller settles the ledger with the results, so no
database connection is shared or opened per thread.
"""

import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import stripe
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from ..models import ReportStatus

# Stripe may or may not have recorded the event: retry, then keep it pending.
UNCERTAIN_ERRORS = (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError)


@dataclass(frozen=True)
class MeterEventCall:
    """One pending ledger row's meter event, as plain data for a sending thread."""

    report_id: int
    key: tuple[str, str]  # (customer, meter): Stripe allows one call at a time per key
    params: dict
    identifier: str
    attempts_before: int


@dataclass(frozen=True)
class SendResult:
    status: str  # sent, failed, or pending (outcome unknown)
    error: str
    attempts: int


class RateLimiter:
    """Spaces calls evenly at `per_second`, shared by all threads."""

    def __init__(self, per_second: float, *, clock=time.monotonic, sleep=time.sleep):
        if per_second <= 0:
            raise ValueError("the meter event rate limit must be positive")
        self.interval = 1.0 / per_second
        self.clock, self.sleep = clock, sleep
        self._next_slot = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self.clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
        if slot > now:
            self.sleep(slot - now)


class MeterEventSender:
    def __init__(
        self,
        client,
        *,
        per_second: float,
        workers: int,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        sleep=time.sleep,
    ):
        self.client = client
        self.limiter = RateLimiter(per_second, sleep=sleep)
        self.workers = max(1, workers)
        self.max_attempts = max(1, max_attempts)
        self.wait = wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial)
        self.sleep = sleep

    def send_all(self, calls: list[MeterEventCall]) -> dict[int, SendResult]:
        by_key = defaultdict(list)
        for call in calls:
            by_key[call.key].append(call)
        results: dict[int, SendResult] = {}
        if not by_key:
            return results
        with ThreadPoolExecutor(max_workers=min(self.workers, len(by_key))) as pool:
            for key_results in pool.map(self._send_in_order, by_key.values()):
                results.update(key_results)
        return results

    def _send_in_order(self, calls: list[MeterEventCall]) -> dict[int, SendResult]:
        return {call.report_id: self.send(call) for call in calls}

    def send(self, call: MeterEventCall) -> SendResult:
        attempts = 0

        def attempt():
            nonlocal attempts
            attempts += 1
            self.limiter.acquire()
            self.client.v1.billing.meter_events.create(
                call.params,
                {
                    "idempotency_key": f"epsilon:{call.identifier}:{call.attempts_before + attempts}",
                    "max_network_retries": 0,  # retried here, visibly
                },
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self.wait,
            retry=retry_if_exception_type(UNCERTAIN_ERRORS),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            retrying(attempt)
        except UNCERTAIN_ERRORS as exc:
            return SendResult(
                ReportStatus.PENDING, f"outcome unknown after {attempts} attempt(s), will resend: {describe(exc)}", attempts
            )
        except stripe.InvalidRequestError as exc:
            if is_duplicate_identifier(exc):  # an earlier attempt got through
                return SendResult(ReportStatus.SENT, "", attempts)
            return SendResult(ReportStatus.FAILED, describe(exc), attempts)
        except stripe.StripeError as exc:  # authentication, permission, idempotency mismatch
            return SendResult(ReportStatus.FAILED, describe(exc), attempts)
        return SendResult(ReportStatus.SENT, "", attempts)


def is_duplicate_identifier(exc: stripe.InvalidRequestError) -> bool:
    message = (exc.user_message or "").lower()
    return exc.param == "identifier" and "already" in message


def describe(exc: stripe.StripeError) -> str:
    status = f"HTTP {exc.http_status}: " if exc.http_status else ""
    return f"Stripe {type(exc).__name__} ({status}{exc.user_message or exc})"
