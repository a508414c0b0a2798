"""
The reporting engine against the local Stripe emulator: what Stripe ends up holding
for each customer and period equals the source's usage for the aligned period, exactly,
however many times and however interrupted the reporting runs.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest

from billing import stripe_api
from billing.models import UsageReport
from billing.services import ledger, usage_reporting

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


def test_usage_is_reported_up_to_the_last_whole_window(billing):
    start = billing.period.billing_start  # 13:45, ten days ago
    billing.source.add(billing.customer_id, start + timedelta(minutes=5), 7)  # 13:50: in window 13:00-14:00
    billing.source.add(billing.customer_id, start + timedelta(hours=2), 5)  # 15:45
    billing.source.add(billing.customer_id, start + timedelta(hours=2, minutes=20), 100)  # 16:05: not yet whole

    result = billing.run(as_of=start + timedelta(hours=2, minutes=30))  # 16:15

    [outcome] = result.outcomes
    assert outcome.status == "sent"
    assert outcome.usage_until == billing.hour0 + 3 * HOUR  # 16:00
    assert outcome.value == Decimal(12)
    assert billing.stripe_total() == Decimal(12)
    [event] = billing.stripe_events()
    # Stamped inside both the usage it covers and Stripe's own billing period.
    assert event["timestamp"] == int((billing.hour0 + 3 * HOUR).timestamp()) - 1
    assert event["timestamp"] >= int(billing.period.billing_start.timestamp())


def test_repeated_runs_send_each_unit_once(billing):
    start = billing.hour0
    billing.source.add(billing.customer_id, start + HOUR, 10)
    as_of = start + 5 * HOUR

    first = billing.run(as_of=as_of)
    second = billing.run(as_of=as_of)
    third = billing.run(as_of=as_of + timedelta(minutes=30))

    assert [o.status for o in first.outcomes] == ["sent"]
    assert [o.status for o in second.outcomes + third.outcomes] == ["skipped", "skipped"]
    assert billing.stripe_total() == Decimal(10)
    assert len(billing.stripe_events()) == 1
    # Nothing new leaves one visible row, kept up to date, not a row per run.
    rows = UsageReport.objects.order_by("sequence")
    assert [(r.sequence, r.status, r.value_sent) for r in rows] == [(1, "sent", 10), (2, "skipped", 0)]


def test_growing_usage_sends_only_the_difference(billing):
    start = billing.hour0
    billing.source.add(billing.customer_id, start + HOUR, 10)
    billing.run(as_of=start + 3 * HOUR)
    billing.source.add(billing.customer_id, start + 3 * HOUR, 4)
    billing.source.add(billing.customer_id, start + 4 * HOUR, 6)

    result = billing.run(as_of=start + 6 * HOUR)

    assert [o.value for o in result.outcomes] == [Decimal(10)]
    assert billing.stripe_total() == Decimal(20) == billing.source.total(billing.customer_id, start, start + 6 * HOUR)
    assert [e["value"] for e in billing.stripe_events()] == ["10", "10"]


def test_late_events_are_picked_up_by_the_next_run(billing):
    start = billing.hour0
    billing.source.add(billing.customer_id, start + HOUR, 10)
    billing.run(as_of=start + 3 * HOUR)
    # An event from an already reported window arrives late.
    billing.source.add(billing.customer_id, start + HOUR + timedelta(minutes=10), 3)

    billing.run(as_of=start + 3 * HOUR + timedelta(minutes=5))

    assert billing.stripe_total() == Decimal(13)


def test_a_smaller_total_sends_a_negative_correction(billing):
    start = billing.hour0
    billing.source.overrides[billing.customer_id] = Decimal(25)
    billing.run(as_of=start + 2 * HOUR)
    billing.source.overrides[billing.customer_id] = Decimal(21)  # the source corrected itself

    result = billing.run(as_of=start + 3 * HOUR)

    assert [o.value for o in result.outcomes] == [Decimal(-4)]
    assert [e["value"] for e in billing.stripe_events()] == ["25", "-4"]
    assert billing.stripe_total() == Decimal(21)


def test_fractions_are_sent_in_whole_units_without_loss_over_runs(billing):
    start = billing.hour0
    for hour in range(1, 4):
        billing.source.add(billing.customer_id, start + hour * HOUR, "0.6")
    billing.run(as_of=start + 2 * HOUR)  # 0.6 -> 0 whole units
    billing.run(as_of=start + 3 * HOUR)  # 1.2 -> 1
    billing.run(as_of=start + 4 * HOUR)  # 1.8 -> 1

    assert billing.stripe_total() == Decimal(1)
    report = UsageReport.objects.filter(status="sent").get()
    assert report.usage_total == Decimal("1.2")  # the exact total stays in the ledger
    assert UsageReport.objects.order_by("-sequence").first().usage_total == Decimal("1.8")


def test_the_period_is_reported_up_to_its_aligned_end_and_the_rest_goes_to_the_next(ended_billing):
    billing = ended_billing
    period = billing.period
    billing.source.add(billing.customer_id, period.end - timedelta(minutes=30), 8)  # before 13:00
    billing.source.add(billing.customer_id, period.end + timedelta(minutes=10), 5)  # 13:10, after the aligned end
    assert period.end.minute == 0 and period.billing_end.minute == 45

    billing.run(as_of=period.end + timedelta(minutes=40))  # 13:40, before Stripe's period ends
    assert billing.stripe_total() == Decimal(8)
    [event] = billing.stripe_events()
    assert int(period.billing_start.timestamp()) <= event["timestamp"] < int(period.billing_end.timestamp())

    # A day later the subscription has rolled over: the 13:00-13:45 usage is billed
    # in the next period, whose reported span starts at 13:00.
    billing.run(as_of=period.end + timedelta(days=1))

    assert billing.stripe_total(start=period.billing_start, end=period.billing_end) == Decimal(8)
    rows = UsageReport.objects.filter(status="sent").order_by("period_start")
    assert [(r.period_start, r.usage_until) for r in rows] == [
        (period.start, period.end),
        (period.end, period.end + timedelta(days=1)),
    ]
    # Stripe's clock is days past this period (only the runs' as-of times are back-dated):
    # its invoice was final before the 13:40 report reached the meter and billed none of
    # the 8, so the second run, learning that, carries them to the next period with its
    # own 5. What Stripe bills in all is every unit, once.
    [invoice] = [i for i in billing.emulator.invoices(customer=billing.customer_id)
                 if i["period_end"] == int(period.billing_end.timestamp())]
    assert invoice["lines"]["data"][0]["quantity"] == 0
    assert billing.stripe_total(start=period.billing_end) == Decimal(8 + 5)


def test_a_period_whose_timestamp_stripe_would_refuse_fails_clearly(billing):
    # A report for usage whose meter event would be stamped in the future.
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 3)
    future = datetime.now(UTC) + timedelta(hours=3)

    [outcome] = billing.run(as_of=future).outcomes

    assert outcome.status == "failed"
    assert "more than 5 minutes ahead of now; check this machine's clock" in outcome.error
    assert billing.stripe_events() == []


def test_dry_run_writes_and_sends_nothing(billing):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 9)

    result = billing.run(as_of=billing.hour0 + 3 * HOUR, dry_run=True)

    assert [(o.status, o.value) for o in result.outcomes] == [("dry-run", Decimal(9))]
    assert not UsageReport.objects.exists()
    assert billing.stripe_events() == []


def test_a_run_that_died_before_calling_stripe_is_resent_once(billing, settings):
    start = billing.hour0
    billing.source.add(billing.customer_id, start + HOUR, 10)

    class ProcessKilled(BaseException):
        pass

    start_sending = usage_reporting.send.start

    def die_before_sending(reports, client):
        if reports:
            raise ProcessKilled
        return start_sending(reports, client)

    with mock.patch.object(usage_reporting.send, "start", side_effect=die_before_sending):
        with pytest.raises(ProcessKilled):
            billing.run(as_of=start + 3 * HOUR)
    pending = UsageReport.objects.get()
    assert pending.status == "pending" and billing.stripe_events() == []

    # While the lease runs, another run leaves it alone and sends nothing new.
    billing.run(as_of=start + 3 * HOUR)
    assert billing.stripe_events() == []

    settings.EPSILON = {**settings.EPSILON, "PENDING_LEASE_SECONDS": 0}
    billing.source.add(billing.customer_id, start + 2 * HOUR, 5)
    billing.run(as_of=start + 4 * HOUR)

    assert billing.stripe_total() == Decimal(15)
    assert [e["identifier"] for e in billing.stripe_events()][0] == pending.identifier
    assert list(UsageReport.objects.order_by("sequence").values_list("status", "value_sent")) == [
        ("sent", 10), ("sent", 5),
    ]


def test_a_run_that_died_after_stripe_recorded_the_event_is_not_counted_twice(billing, settings):
    start = billing.hour0
    billing.source.add(billing.customer_id, start + HOUR, 10)

    class ProcessKilled(BaseException):
        pass

    with mock.patch.object(ledger, "settle", side_effect=ProcessKilled):
        with pytest.raises(ProcessKilled):
            billing.run(as_of=start + 3 * HOUR)
    assert UsageReport.objects.get().status == "pending"
    assert billing.stripe_total() == Decimal(10)  # Stripe has it; the ledger does not know

    settings.EPSILON = {**settings.EPSILON, "PENDING_LEASE_SECONDS": 0}
    billing.run(as_of=start + 3 * HOUR)

    assert billing.stripe_total() == Decimal(10)
    assert list(UsageReport.objects.order_by("sequence").values_list("status", flat=True)) == [
        "sent", "skipped",
    ]


def test_a_source_failure_fails_its_reports_and_keeps_the_usage_for_later(billing):
    start = billing.hour0
    billing.source.add(billing.customer_id, start + HOUR, 10)
    billing.source.failing_meters["m1"] = "OpenMeter is down"

    result = billing.run(as_of=start + 3 * HOUR)
    again = billing.run(as_of=start + 4 * HOUR)

    assert [o.status for o in result.outcomes + again.outcomes] == ["failed", "failed"]
    assert "OpenMeter is down" in result.outcomes[0].error
    row = UsageReport.objects.get()  # one row for the ongoing failure, counting attempts
    assert (row.status, row.attempts, row.usage_total) == ("failed", 2, None)

    del billing.source.failing_meters["m1"]
    billing.run(as_of=start + 4 * HOUR)
    assert billing.stripe_total() == Decimal(10)


@pytest.mark.parametrize(
    ("bad_total", "message"),
    [(None, "returned no total"), (Decimal("NaN"), "not a number"), (Decimal(-3), "negative total")],
)
def test_bad_totals_from_the_source_are_refused(billing, bad_total, message):
    billing.source.overrides[billing.customer_id] = bad_total
    [outcome] = billing.run(as_of=billing.hour0 + 2 * HOUR).outcomes
    assert outcome.status == "failed" and message in outcome.error
    assert billing.stripe_events() == []


def test_a_customer_without_a_subject_mapping_gets_a_clear_failed_row(billing, settings):
    settings.EPSILON = {**settings.EPSILON, "SUBJECT_METADATA_KEY": "openmeter_subject"}
    [outcome] = billing.run(as_of=billing.hour0 + 2 * HOUR).outcomes
    assert outcome.status == "failed"
    assert "has no usage subject: its metadata has no 'openmeter_subject'" in outcome.error
    assert UsageReport.objects.get().error == outcome.error


def test_the_subject_comes_from_customer_metadata_when_configured(billing, settings):
    settings.EPSILON = {**settings.EPSILON, "SUBJECT_METADATA_KEY": "openmeter_subject"}
    client = stripe_api.get_client()
    customer = client.v1.customers.update(billing.customer_id, {"metadata": {"openmeter_subject": "tenant-42"}})
    from billing.services import stripe_sync

    stripe_sync.sync_customer(customer)
    billing.source.add("tenant-42", billing.hour0 + HOUR, 6)

    billing.run(as_of=billing.hour0 + 2 * HOUR)

    assert billing.stripe_total() == Decimal(6)


def test_stripe_refusing_an_event_fails_that_report(billing):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 10)
    billing.emulator.server.app.revoked_keys.add(billing.emulator.api_key)

    [outcome] = billing.run(as_of=billing.hour0 + 2 * HOUR).outcomes

    assert outcome.status == "failed"
    assert "AuthenticationError" in outcome.error and "HTTP 401" in outcome.error
    assert UsageReport.objects.get().status == "failed"


def fail_meter_events(emulator, times: int, *, after_recording: bool):
    """Make the emulator answer the next `times` meter event calls with a 500."""
    from stripe_emulator.errors import ApiError

    remaining = {"count": times}

    def flaky(ctx, call_next):
        if ctx.path != "/v1/billing/meter_events" or remaining["count"] == 0:
            return call_next()
        remaining["count"] -= 1
        if after_recording:
            call_next()  # Stripe recorded the event; its answer is lost
        raise ApiError("An unknown error occurred (injected by the test).")

    emulator.server.app.use(flaky, name="flaky_meter_events")


@pytest.mark.parametrize("after_recording", [False, True], ids=["not-recorded", "answer-lost"])
def test_an_uncertain_stripe_answer_stays_pending_and_is_resent_once(billing, settings, after_recording):
    settings.EPSILON = {**settings.EPSILON, "STRIPE_MAX_ATTEMPTS": 1}
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 10)
    fail_meter_events(billing.emulator, 1, after_recording=after_recording)

    [outcome] = billing.run(as_of=billing.hour0 + 2 * HOUR).outcomes

    assert outcome.status == "pending"
    assert "outcome unknown after 1 attempt(s), will resend" in outcome.error and "HTTP 500" in outcome.error
    assert billing.stripe_total() == (Decimal(10) if after_recording else 0)

    settings.EPSILON = {**settings.EPSILON, "PENDING_LEASE_SECONDS": 0}
    billing.run(as_of=billing.hour0 + 2 * HOUR)

    assert billing.stripe_total() == Decimal(10)
    report = UsageReport.objects.get(sequence=1)
    assert (report.status, report.attempts, report.error) == ("sent", 2, "")


@pytest.mark.parametrize("after_recording", [False, True], ids=["not-recorded", "answer-lost"])
def test_retries_use_a_key_per_attempt_count_once_and_show_in_the_ledger(billing, after_recording):
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 10)
    fail_meter_events(billing.emulator, 2, after_recording=after_recording)

    [outcome] = billing.run(as_of=billing.hour0 + 2 * HOUR).outcomes

    assert outcome.status == "sent"
    assert billing.stripe_total() == Decimal(10)
    calls = billing.emulator.requests(method="POST", path="/v1/billing/meter_events")
    # A lost answer: the second attempt learns from Stripe that the event is already there.
    expected_calls = 2 if after_recording else 3
    assert len(calls) == expected_calls and len({c["idempotency_key"] for c in calls}) == expected_calls
    assert UsageReport.objects.get().attempts == expected_calls


def test_several_metered_items_and_meters_on_one_customer(billing):
    from billing.services import stripe_sync

    client = stripe_api.get_client().v1
    meter2 = client.billing.meters.create(
        {"display_name": "Epsilon invocations", "event_name": "epsilon_invocations",
         "default_aggregation": {"formula": "sum"}}
    )
    stripe_sync.sync_meter(meter2, source_meter_slug="m2")
    product = client.products.list().data[0]
    price2 = client.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount_decimal": "1",
         "recurring": {"interval": "month", "usage_type": "metered", "meter": meter2.id}}
    )
    real_now = billing.emulator.now()
    billing.emulator.set_time(int(billing.period.billing_start.timestamp()), freeze=True)
    second = client.subscriptions.create({"customer": billing.customer_id, "items": [{"price": price2.id}]})
    billing.emulator.set_time(real_now, freeze=False)
    stripe_sync.sync_subscription(second)
    start = billing.hour0
    billing.source.add(billing.customer_id, start + HOUR, 10, meter_slug="m1")
    billing.source.add(billing.customer_id, start + HOUR, 1000, meter_slug="m2")
    billing.source.add(billing.customer_id, datetime.now(UTC) - 2 * HOUR, 7, meter_slug="m2")

    result = billing.run(as_of=datetime.now(UTC))

    by_meter = {o.target.meter.source_meter_slug: o for o in result.outcomes}
    assert set(by_meter) == {"m1", "m2"} and {o.status for o in result.outcomes} == {"sent"}
    totals = {m: Decimal(billing.emulator.meter_event_totals(meter=m_id, customer=billing.customer_id)["total"])
              for m, m_id in (("m1", by_meter["m1"].target.meter.id), ("m2", meter2.id))}
    assert totals == {"m1": Decimal(10), "m2": Decimal(1007)}
    assert sorted(billing.source.queries) == [("m1", 1), ("m2", 1)]  # one batched query per meter


def test_large_runs_go_through_the_v2_stream_exactly_once(billing, settings):
    settings.EPSILON = {**settings.EPSILON, "STRIPE_METER_EVENT_API": "auto", "STRIPE_STREAM_THRESHOLD": 1}
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 10)

    [outcome] = billing.run(as_of=billing.hour0 + 2 * HOUR).outcomes
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 5)
    [again] = billing.run(as_of=billing.hour0 + 3 * HOUR).outcomes

    assert (outcome.status, again.status, again.value) == ("sent", "sent", Decimal(5))
    assert billing.stripe_total() == Decimal(15)
    assert billing.emulator.requests(method="POST", path="/v1/billing/meter_events") == []
    assert len(billing.emulator.requests(method="POST", path="/v2/billing/meter_event_stream")) == 2


def test_periods_the_mirror_missed_entirely_are_each_reported_into_their_own(stripe_emulated):
    # The app was down for longer than a period: its mirror still shows the first one,
    # Stripe has moved two periods on. Each period is billed its own usage, none skipped.
    from tests.billing_fixtures import subscribe

    billing = subscribe(stripe_emulated, days_ago=63)
    first = billing.period
    billing.source.add(billing.customer_id, first.start + timedelta(days=3), 4)
    billing.source.add(billing.customer_id, first.billing_end + timedelta(days=3), 6)  # the missed period
    billing.source.add(billing.customer_id, datetime.now(UTC) - timedelta(hours=3), 2)  # the current one

    billing.run(as_of=datetime.now(UTC))

    periods = sorted({(i["period_start"], i["period_end"]) for i in stripe_emulated.invoices(customer=billing.customer_id)})
    assert len(periods) == 2  # Stripe invoiced the first two periods
    (_first, (_start, second_end)) = periods
    # Both ended periods were found and their usage counted; Stripe finalized their
    # invoices long ago (the mirror's first period too, though the mirror still shows
    # it current), so their usage is carried to the current period instead of being
    # sent into invoices that can no longer bill it.
    for start, used in ((first.billing_start, 4), (first.billing_end, 6)):
        ended = UsageReport.objects.get(billing_start=start)
        assert (ended.status, ended.usage_total, ended.value_sent) == ("carried", Decimal(used), Decimal(0))
    assert billing.stripe_total(end=datetime.fromtimestamp(second_end, UTC)) == Decimal(0)
    assert [i["lines"]["data"][0]["quantity"] for i in stripe_emulated.invoices(customer=billing.customer_id)] == [0, 0]
    assert billing.stripe_total(start=datetime.fromtimestamp(second_end, UTC)) == Decimal(4 + 6 + 2)
    billing.run(as_of=datetime.now(UTC))  # and again: nothing twice
    assert billing.stripe_total() == Decimal(12)


@pytest.mark.parametrize(("fault", "landed"), [("rate_lost", True), ("rate_500", False)], ids=["landed", "never-landed"])
def test_a_report_whose_outcome_is_unknown_past_the_dedupe_window_is_resolved_by_stripes_summary(
    billing, settings, fault, landed
):
    # Stripe's answer was lost (the event landed) or a 500 (it did not); a day later
    # the identifier no longer dedupes, so Stripe's meter summary decides, and usage is
    # billed once either way.
    settings.EPSILON = {**settings.EPSILON, "STRIPE_MAX_ATTEMPTS": 1}
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 7)
    billing.emulator.set_faults(**{fault: 1.0}, paths=["/v1/billing/meter_events"])
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    report = UsageReport.objects.get(status="pending")
    billing.emulator.set_faults(**{fault: 0.0})
    a_day_ago = datetime.now(UTC) - timedelta(hours=25)
    UsageReport.objects.filter(pk=report.pk).update(created=a_day_ago, updated=a_day_ago)

    billing.run(as_of=billing.hour0 + 2 * HOUR)

    report.refresh_from_db()
    assert report.status == ("sent" if landed else "failed"), report.error
    assert billing.stripe_total() == Decimal(7)
    assert not UsageReport.objects.filter(status="pending").exists()


def test_each_report_is_one_structured_log_line(billing, caplog, settings):
    import json
    import logging

    from pythonjsonlogger.json import JsonFormatter

    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 7)
    with caplog.at_level(logging.INFO, logger="billing.reports"):
        billing.run(as_of=billing.hour0 + 2 * HOUR)
    [record] = [r for r in caplog.records if r.name == "billing.reports"]
    line = json.loads(JsonFormatter(settings.LOGGING["formatters"]["json"]["format"]).format(record))
    report = UsageReport.objects.get()
    assert {k: line[k] for k in ("customer", "meter", "status", "value", "identifier", "trigger")} == {
        "customer": billing.customer_id, "meter": report.meter_id, "status": "sent", "value": "7",
        "identifier": report.identifier, "trigger": "command",
    }
    assert line["period_start"] == report.billing_start.isoformat()
