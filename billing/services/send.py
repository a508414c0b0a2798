"""
Send: pending ledger rows become meter events, at the rate Stripe allows.

The threads of the senders (meter_event_sender.py) only talk HTTP; the results come
back here and are settled (settle.py) in one transaction, so no database connection
is shared or opened per sender thread. A batch of a reporting run is sent from a
thread of its own while the run claims the next batch; on PostgreSQL, when the rows
were committed (no transaction around the run), that thread also settles the batch
on a connection of its own, so the database writes the statuses while the run reads
and claims its next batch. Elsewhere (SQLite has one writer; a caller's open
transaction holds rows no other connection sees) the caller settles.
"""

from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connection

from .. import stripe_api
from ..conf import conf
from ..models import UsageReport
from . import ledger, settle
from .meter_event_sender import MeterEventCall, MeterEventSender, MeterEventStreamSender


def send_reports(reports: list[UsageReport], client) -> None:
    """Send pending rows' meter events and settle each with what Stripe said."""
    start(reports, client).settle()


class Sending:
    """
    Pending rows' meter events on their way to Stripe, from a thread that only talks
    HTTP (the caller may meanwhile claim its next batch) and, where it can, settles them
    (`settles_from_thread`); `settle` waits for that, or for Stripe's answers and records
    them. Each row was written or claimed (updated = now) just
    before; its lease is kept while the send lasts, so no other run takes a row this
    one is still sending.
    """

    def __init__(self, reports: list[UsageReport], client):
        self.reports = reports
        self._keeper = self._pool = self._results = None
        if not reports:
            return
        calls = [meter_event_call(r) for r in reports]
        sender = sender_for(client, len(reports))
        self._keeper = ledger.LeaseKeeper([r.pk for r in reports], lease_seconds=conf.PENDING_LEASE_SECONDS)
        self._keeper.__enter__()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meter-events")
        self._settled_there = settles_from_thread()
        self._results = self._pool.submit(self._send, sender, calls)

    def _send(self, sender, calls) -> dict:
        """In the sending thread: Stripe's answers, settled here on a connection of its own if it settles."""
        results = sender.send_all(calls)
        if self._settled_there:
            # The lease is let go first, as when the caller settles: its renewal and the
            # settling UPDATEs would otherwise lock the same rows in different orders.
            self._keeper.__exit__(None, None, None)
            try:
                settle.settle_sent(results, self.reports)
            finally:
                connection.close()
        return results

    def settle(self) -> None:
        if not self.reports:
            return
        try:
            results = self._results.result()
        finally:
            self._pool.shutdown()
            self._keeper.__exit__(None, None, None)
        if not self._settled_there:
            settle.settle_sent(results, self.reports)


def settles_from_thread() -> bool:
    """
    Whether a batch's sending thread settles it: PostgreSQL, and the rows committed (no
    transaction around the run, autocommit on), so that another connection sees them.
    """
    return connection.vendor == "postgresql" and connection.get_autocommit() and not connection.in_atomic_block


def start(reports: list[UsageReport], client) -> Sending:
    """Start sending these pending rows' meter events; `.settle()` records Stripe's answers."""
    return Sending(reports, client)


def meter_event_call(report: UsageReport) -> MeterEventCall:
    meter = report.meter
    return MeterEventCall(
        report_id=report.pk,
        key=(report.customer_id, meter.id),
        params={
            "event_name": meter.event_name,
            "payload": {
                meter.customer_payload_key: report.customer_id,
                meter.value_payload_key: str(int(report.value_sent)),
            },
            "identifier": report.identifier,
            "timestamp": int(report.event_timestamp.timestamp()),
        },
        identifier=report.identifier,
        attempts_before=report.attempts,
    )


def sender_for(client, event_count: int):
    """v1 for everyday runs; Stripe's v2 stream for runs too large for v1's call rate."""
    options = {
        "workers": conf.STRIPE_SEND_CONCURRENCY,
        "max_attempts": conf.STRIPE_MAX_ATTEMPTS,
        "backoff_initial": conf.STRIPE_BACKOFF_SECONDS,
    }
    api = conf.STRIPE_METER_EVENT_API
    if api == "v2" or (api == "auto" and event_count >= conf.STRIPE_STREAM_THRESHOLD):
        per_second = conf.STRIPE_STREAM_EVENTS_PER_SECOND or (10_000 if settings.STRIPE_LIVE_MODE else 25)
        return MeterEventStreamSender(
            client, stream_client_for=stripe_api.get_stream_client, per_second=per_second, **options
        )
    per_second = conf.STRIPE_METER_EVENTS_PER_SECOND or (1000 if settings.STRIPE_LIVE_MODE else 25)
    return MeterEventSender(client, per_second=per_second, **options)
