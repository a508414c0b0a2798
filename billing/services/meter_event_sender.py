"""
Send meter events to Stripe as fast as Stripe allows, and no faster.

- A client-side rate limit (Stripe: 1,000 meter events/s live; sandboxes share the
  basic 25 requests/s), so a large run doesn't turn into a storm of 429s.
- At most one call in flight per customer and meter (Stripe's rule), but enough
  threads across customers to reach the limit.
- Retries with exponential backoff and jitter on 429s, 5xx and network errors, each
  attempt with its own Idempotency-Key (Stripe replays a key's first answer, a 500
  included); the meter event identifier is what deduplicates across attempts.

- For large runs, Stripe's v2 meter event stream: up to 100 events a request over a
  15-minute session, for volumes v1's 1,000 calls/s can't carry. Its identifiers
  dedupe the same way, so a batch retried after an unknown outcome counts once.

The threads only talk HTTP; the caller settles the ledger with the results, so no
database connection is shared or opened per thread.
"""

import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import stripe
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from epsilon.timewindows import format_rfc3339, parse_rfc3339

from ..models import ReportStatus

# Stripe may or may not have recorded the event: retry, then keep it pending.
UNCERTAIN_ERRORS = (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError)
# Stripe's answer to an identifier it has seen in the last 24 hours: the event counts once.
DUPLICATE_IDENTIFIER_MESSAGE = "an event already exists with identifier"


def is_uncertain(exc: BaseException) -> bool:
    """
    Whether Stripe may have recorded the event: network errors, 5xx, 429, and a 409
    (another request with the same Idempotency-Key still in progress, whose outcome is
    not ours to know yet).
    """
    return isinstance(exc, UNCERTAIN_ERRORS) or (isinstance(exc, stripe.StripeError) and exc.http_status == 409)
STREAM_BATCH_SIZE = 100  # Stripe's limit per v2 stream request
# Start a new stream session this long before the current one expires.
SESSION_MARGIN = timedelta(minutes=1)


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


class _Sender:
    """What both APIs share: a rate limit, sending threads, retries with backoff."""

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
        # Idempotency-Keys of this run's own: Stripe replays a key's first answer (a 500
        # included) for 24 hours, so a run after a crash must not reuse the dead run's.
        self.run_key = uuid.uuid4().hex[:12]

    def _with_retries(self, attempt, retry_on) -> None:
        """Call `attempt` until it succeeds, fails for certain, or attempts run out."""
        Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self.wait,
            retry=retry_if_exception(retry_on),
            sleep=self.sleep,
            reraise=True,
        )(attempt)


class MeterEventSender(_Sender):
    """v1: one call per event, one call in flight per customer and meter."""

    def send_all(self, calls: list[MeterEventCall]) -> dict[int, SendResult]:
        """Each call's result, by report id: v1, one call per event."""
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
                    "idempotency_key": f"epsilon:{call.identifier}:{self.run_key}:{call.attempts_before + attempts}",
                    "max_network_retries": 0,  # retried here, visibly
                },
            )

        try:
            self._with_retries(attempt, is_uncertain)
        except stripe.StripeError as exc:
            if is_duplicate_identifier(exc):  # an earlier attempt (or run) got through
                return SendResult(ReportStatus.SENT, "", attempts)
            if is_uncertain(exc):
                return SendResult(
                    ReportStatus.PENDING, f"outcome unknown after {attempts} attempt(s), will resend: {describe(exc)}", attempts
                )
            # Authentication, permission, a request Stripe refused for certain.
            return SendResult(ReportStatus.FAILED, describe(exc), attempts)
        return SendResult(ReportStatus.SENT, "", attempts)


def is_duplicate_identifier(exc: stripe.StripeError) -> bool:
    """Stripe's 400 for an identifier it already has: by its message, whatever the param."""
    message = (exc.user_message or str(exc) or "").lower()
    return exc.http_status == 400 and DUPLICATE_IDENTIFIER_MESSAGE in message


def describe(exc: stripe.StripeError) -> str:
    status = f"HTTP {exc.http_status}: " if exc.http_status else ""
    return f"Stripe {type(exc).__name__} ({status}{exc.user_message or exc})"


class MeterEventStreamSender(_Sender):
    """
    Stripe's v2 meter event stream: batches of up to 100 events, `per_second` events
    a second, over a session token renewed before it expires. A batch's outcome is its
    events' outcome: Stripe validates stream events asynchronously, so the app checks
    what it can (timestamps) before sending, and reconciliation finds the rest.
    """

    def __init__(self, client, *, stream_client_for, per_second: float, **options):
        # The limiter counts requests; each carries up to STREAM_BATCH_SIZE events.
        super().__init__(client, per_second=max(per_second / STREAM_BATCH_SIZE, 0.001), **options)
        self.stream_client_for = stream_client_for  # session token -> StripeClient
        self._session = None
        self._session_lock = threading.Lock()

    def send_all(self, calls: list[MeterEventCall]) -> dict[int, SendResult]:
        batches = [calls[i : i + STREAM_BATCH_SIZE] for i in range(0, len(calls), STREAM_BATCH_SIZE)]
        results: dict[int, SendResult] = {}
        if not batches:
            return results
        with ThreadPoolExecutor(max_workers=min(self.workers, len(batches))) as pool:
            for batch, result in zip(batches, pool.map(self.send_batch, batches)):
                results.update({call.report_id: result for call in batch})
        return results

    def send_batch(self, batch: list[MeterEventCall]) -> SendResult:
        body = {"events": [stream_event(call.params) for call in batch]}
        attempts = 0

        def attempt():
            nonlocal attempts
            attempts += 1
            self.limiter.acquire()
            try:
                self._stream_client().v2.billing.meter_event_stream.create(body, {"max_network_retries": 0})
            except stripe.TemporarySessionExpiredError:
                self._session = None  # a new session, then retry
                raise

        def retry_on(exc):
            return is_uncertain(exc) or isinstance(exc, stripe.TemporarySessionExpiredError)

        try:
            self._with_retries(attempt, retry_on)
        except stripe.StripeError as exc:
            if not retry_on(exc):
                return SendResult(ReportStatus.FAILED, f"v2 stream batch refused: {describe(exc)}", attempts)
            return SendResult(
                ReportStatus.PENDING,
                f"outcome unknown after {attempts} attempt(s) of a v2 stream batch, will resend: {describe(exc)}",
                attempts,
            )
        return SendResult(ReportStatus.SENT, "", attempts)

    def _stream_client(self):
        with self._session_lock:
            now = datetime.now(UTC)
            if self._session is None or self._session[1] - SESSION_MARGIN <= now:
                session = self.client.v2.billing.meter_event_session.create()
                expires_at = parse_rfc3339(session.expires_at)
                self._session = (self.stream_client_for(session.authentication_token), expires_at)
            return self._session[0]


def stream_event(params: dict) -> dict:
    """A v1 meter event's parameters as a v2 stream event (RFC 3339 timestamp)."""
    timestamp = format_rfc3339(datetime.fromtimestamp(params["timestamp"], UTC))
    return {**params, "timestamp": timestamp}


