"""
Large runs: a run reads, claims, sends and settles a batch of customers at a time, the
ledger writes each batch in bulk, and shards of the customers together report each
customer exactly once. Asserted on what Stripe's meter holds, per customer.
"""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.errors import BillingError
from billing.models import UsageReport
from billing.services import usage_reporting
from billing.services.targets import Shard, customers_to_report
from tests.billing_fixtures import subscribed_customers
from tests.usage_doubles import RecordedUsage

CUSTOMERS = 7
pytestmark = [pytest.mark.django_db]


@pytest.fixture
def fleet(stripe_emulated):
    """Customers subscribed two days ago, each with its own usage (3.5 + n units)."""
    emulator = stripe_emulated
    started = datetime.fromtimestamp(int(time.time()), UTC) - timedelta(days=2)
    customers = [c.id for c, _s in subscribed_customers(emulator, CUSTOMERS, started=started, email="fleet{n}@example.com")]
    source = RecordedUsage()
    for n, customer_id in enumerate(customers):
        source.add(customer_id, started + timedelta(hours=3), Decimal("3.5") + n)
    return emulator, source, customers


def run(source, **options):
    return usage_reporting.report_usage(trigger=UsageReport.Trigger.COMMAND, source=source, **options)


def stripe_totals(emulator, customers) -> dict:
    return {c: Decimal(emulator.meter_event_totals(customer=c)["total"]) for c in customers}


def whole_units_used(customers) -> dict:
    return {c: Decimal(3 + n) for n, c in enumerate(customers)}  # 3.5 + n, rounded down


def inserts_and_updates(queries) -> tuple[int, int]:
    sql = [q["sql"] for q in queries.captured_queries]
    # On PostgreSQL a batch's rows go in by one COPY (not seen here) after one draw of ids.
    inserts = sum(s.startswith('INSERT INTO "billing_usagereport"') or "nextval(pg_get_serial_sequence" in s for s in sql)
    updates = sum(s.startswith('UPDATE "billing_usagereport"') for s in sql)
    return inserts, updates


def test_a_run_in_batches_reports_every_customer_exactly(fleet, settings):
    emulator, source, customers = fleet
    settings.EPSILON = {**settings.EPSILON, "REPORT_BATCH_SIZE": 3}
    result = run(source)
    assert result.count(UsageReport.Status.SENT) == CUSTOMERS
    # No customer is on a test clock: none is asked for (SQLite once read a JSON null as 'null').
    assert emulator.requests(path_prefix="/v1/test_helpers/test_clocks") == []
    assert stripe_totals(emulator, customers) == whole_units_used(customers)
    again = run(source)  # nothing new: nothing sent, each customer's period skipped once
    assert again.count(UsageReport.Status.SKIPPED) == CUSTOMERS
    assert stripe_totals(emulator, customers) == whole_units_used(customers)


@pytest.mark.parametrize("batch_size, batches", [(100, 1), (3, 3)])
def test_the_ledger_writes_each_batch_in_bulk_not_per_customer(fleet, settings, batch_size, batches):
    emulator, source, customers = fleet
    settings.EPSILON = {**settings.EPSILON, "REPORT_BATCH_SIZE": batch_size}
    with CaptureQueriesContext(connection) as queries:
        run(source)
    # One INSERT of a batch's rows, one UPDATE settling its sent rows: per batch, not per customer.
    assert inserts_and_updates(queries) == (batches, batches)
    assert UsageReport.objects.filter(status=UsageReport.Status.SENT).count() == CUSTOMERS
    assert stripe_totals(emulator, customers) == whole_units_used(customers)


def test_shards_split_the_customers_and_together_report_each_once(fleet):
    emulator, source, customers = fleet
    # The fewest shards that split these (random) customer ids: two shards hold all seven in
    # one of them once in 64 fleets, and the test would then show no split.
    count = next(n for n in range(2, 64) if len({Shard(0, n).index_of(c) for c in customers}) > 1)
    parts = [customers_to_report(shard=Shard(index, count)) for index in range(count)]
    assert sorted(sum(parts, [])) == sorted(customers) and sum(map(len, parts)) == len(set(sum(parts, [])))
    assert sum(1 for part in parts if part) > 1
    results = [run(source, shard=Shard(index, count)) for index in range(count)]
    reported = [{o.target.customer_id for o in r.outcomes if o.status == UsageReport.Status.SENT} for r in results]
    assert reported == [set(part) for part in parts]
    assert stripe_totals(emulator, customers) == whole_units_used(customers)
    assert run(source).count(UsageReport.Status.SENT) == 0  # a run over all customers finds nothing new


def test_a_run_that_keeps_no_outcomes_still_counts_and_streams_them(fleet):
    emulator, source, customers = fleet
    lines = []
    result = run(source, keep_outcomes=False, on_outcome=lambda o: lines.append(o.line()))
    assert result.outcomes == [] and result.total == CUSTOMERS == len(lines)
    assert result.units_sent == sum(whole_units_used(customers).values())
    assert all("status: sent" in line for line in lines)
    assert result.summary() == f"{CUSTOMERS} report(s): {CUSTOMERS} sent; +{result.units_sent} unit(s) sent to Stripe."


def test_a_shard_that_does_not_exist_is_refused():
    with pytest.raises(BillingError, match="shard 2 of 2 does not exist"):
        Shard(2, 2)


def test_a_batch_is_claimed_while_the_one_before_it_is_sent(fleet, settings, monkeypatch):
    """The next batch's rows are committed before the previous batch is settled; sends never overlap."""
    emulator, source, customers = fleet
    settings.EPSILON = {**settings.EPSILON, "REPORT_BATCH_SIZE": 3}
    from billing.services import settle

    seen, settle_sent = [], settle.settle_sent

    def recording(results, reports):
        seen.append((len(reports), UsageReport.objects.count(), UsageReport.objects.filter(status="sent").count()))
        settle_sent(results, reports)

    monkeypatch.setattr(settle, "settle_sent", recording)
    run(source)
    # Batches of 3, 3 and 1: when the first is settled the second is claimed too (6 rows,
    # none sent yet); the second settles once the third is claimed; the last on its own.
    assert seen == [(3, 6, 0), (3, 7, 3), (1, 7, 6)]
    assert stripe_totals(emulator, customers) == whole_units_used(customers)


def test_a_batch_that_cannot_be_claimed_still_lets_the_one_on_its_way_settle(fleet, settings, monkeypatch):
    """A run that fails mid-way leaves no sent batch unsettled (nor its lease kept alive)."""
    emulator, source, customers = fleet
    settings.EPSILON = {**settings.EPSILON, "REPORT_BATCH_SIZE": 4}
    claim_customers, calls = usage_reporting._claim_customers, []

    def second_batch_fails(customer_ids, **options):
        calls.append(customer_ids)
        if len(calls) == 2:
            raise RuntimeError("the usage source went away")
        return claim_customers(customer_ids, **options)

    monkeypatch.setattr(usage_reporting, "_claim_customers", second_batch_fails)
    with pytest.raises(RuntimeError):
        run(source)
    first = calls[0]
    assert UsageReport.objects.filter(customer_id__in=first, status="sent").count() == len(first) == 4
    assert not UsageReport.objects.filter(status="pending").exists()
    sent = stripe_totals(emulator, first)
    assert sent == {c: whole_units_used(customers)[c] for c in first}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has one writer: the run settles its batches itself")
@pytest.mark.django_db(transaction=True)  # committed rows, as in a real run (no test transaction around it)
def test_on_postgresql_the_sending_thread_settles_its_batch_before_the_next_is_sent(fleet, settings, monkeypatch):
    """Each batch is settled by the thread that sent it, on its own connection; sends still never overlap."""
    import threading

    from billing.services import meter_event_sender, settle

    emulator, source, customers = fleet
    settings.EPSILON = {**settings.EPSILON, "REPORT_BATCH_SIZE": 3}
    steps, settle_sent = [], settle.settle_sent

    def recording_settle(results, reports):
        settle_sent(results, reports)
        steps.append(("settled", len(reports), threading.current_thread() is threading.main_thread()))

    monkeypatch.setattr(settle, "settle_sent", recording_settle)
    for cls in (meter_event_sender.MeterEventSender, meter_event_sender.MeterEventStreamSender):
        def recording_send(self, calls, _send=cls.send_all):
            steps.append(("sending", len(calls), threading.current_thread() is threading.main_thread()))
            return _send(self, calls)

        monkeypatch.setattr(cls, "send_all", recording_send)
    run(source)
    # Batches of 3, 3 and 1, each sent then settled off the main thread before the next is sent.
    assert steps == [(step, n, False) for n in (3, 3, 1) for step in ("sending", "settled")]
    assert UsageReport.objects.filter(status=UsageReport.Status.SENT).count() == CUSTOMERS
    assert stripe_totals(emulator, customers) == whole_units_used(customers)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has one writer: the run settles its batches itself")
@pytest.mark.django_db(transaction=True)
def test_with_autocommit_off_the_run_settles_its_batches_itself(fleet, settings):
    """Rows a caller has not committed are invisible to another connection: no thread settles them."""
    from django.db import transaction

    emulator, source, customers = fleet
    settings.EPSILON = {**settings.EPSILON, "REPORT_BATCH_SIZE": 3}
    transaction.set_autocommit(False)
    try:
        result = run(source)
        assert result.count(UsageReport.Status.SENT) == CUSTOMERS
        assert UsageReport.objects.filter(status=UsageReport.Status.SENT).count() == CUSTOMERS
        transaction.commit()
    finally:
        transaction.set_autocommit(True)
    assert stripe_totals(emulator, customers) == whole_units_used(customers)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner statistics")
@pytest.mark.django_db(transaction=True)  # committed rows: a run inside a transaction leaves statistics alone
def test_a_run_analyzes_a_ledger_whose_statistics_lag_behind_what_it_wrote(fleet, settings, monkeypatch):
    """A ledger PostgreSQL thinks empty is analyzed as a run fills it; one it knows is left alone."""
    from billing.services import ledger

    emulator, source, customers = fleet
    settings.EPSILON = {**settings.EPSILON, "REPORT_BATCH_SIZE": 3}
    monkeypatch.setattr(ledger, "ANALYZE_AFTER", 3)

    def estimate():
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'billing_usagereport'::regclass")
            return cursor.fetchone()[0]

    with connection.cursor() as cursor:  # as a new ledger: never analyzed (-1) or analyzed empty (0)
        cursor.execute("ANALYZE billing_usagereport")
    assert estimate() <= 0
    analyzed, keep_statistics = [], ledger.keep_statistics
    monkeypatch.setattr(ledger, "keep_statistics", lambda **kw: analyzed.append(keep_statistics(**kw)) or analyzed[-1])
    run(source)
    # 3 rows written (estimate 0: analyzed, 3), 6 (3 is half: left), 7 (3 < 3.5: analyzed, 7).
    assert analyzed == [True, False, True]
    assert estimate() == CUSTOMERS
    assert stripe_totals(emulator, customers) == whole_units_used(customers)
