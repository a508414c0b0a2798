"""Sending meter events: at Stripe's rate, one call at a time per customer and meter."""

import threading
import time
from collections import Counter

import pytest

from billing.services.meter_event_sender import MeterEventCall, MeterEventSender, RateLimiter


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_the_rate_limiter_spaces_calls_evenly():
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.acquire()
    assert clock.slept == [0.25, 0.25, 0.25, 0.25]  # the first call goes at once


def test_the_rate_limiter_does_not_save_up_idle_time():
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    clock.now += 10  # idle
    limiter.acquire()
    limiter.acquire()
    assert clock.slept == [0.5]


def test_a_rate_must_be_positive():
    with pytest.raises(ValueError, match="must be positive"):
        RateLimiter(0)


@pytest.fixture
def customers_and_meter(stripe_emulator):
    client = stripe_emulator.client()
    meter = client.v1.billing.meters.create(
        {"display_name": "m", "event_name": "epsilon_execution_duration", "default_aggregation": {"formula": "sum"}}
    )
    customers = [client.v1.customers.create({"email": f"c{n}@example.com"}).id for n in range(4)]
    return client, meter, customers


def calls_for(customers, meter, per_customer):
    now = int(time.time())
    calls = []
    for c in customers:
        for n in range(per_customer):
            identifier = f"{c}-{n}"
            calls.append(MeterEventCall(
                report_id=len(calls), key=(c, meter.id), identifier=identifier, attempts_before=0,
                params={"event_name": "epsilon_execution_duration", "identifier": identifier, "timestamp": now,
                        "payload": {"stripe_customer_id": c, "value": "1"}},
            ))
    return calls


def test_one_call_in_flight_per_customer_and_meter_but_many_across_customers(stripe_emulator, customers_and_meter):
    client, meter, customers = customers_and_meter
    in_flight, peak_per_key, peak_total = Counter(), Counter(), [0]
    lock = threading.Lock()
    wanted = threading.Condition(lock)

    def watch(ctx, call_next):
        if ctx.path != "/v1/billing/meter_events":
            return call_next()
        key = ctx.body_params["payload"]["stripe_customer_id"]
        with lock:
            in_flight[key] += 1
            peak_per_key[key] = max(peak_per_key[key], in_flight[key])
            peak_total[0] = max(peak_total[0], sum(in_flight.values()))
            wanted.notify_all()
            # Hold the first calls until three are in flight at once: only a sender
            # that sends to customers in parallel gets past this.
            wanted.wait_for(lambda: peak_total[0] >= 3, timeout=30)
        try:
            return call_next()
        finally:
            with lock:
                in_flight[key] -= 1

    stripe_emulator.app.use(watch, name="watch")
    sender = MeterEventSender(client, per_second=1000, workers=8)

    results = sender.send_all(calls_for(customers, meter, per_customer=3))

    assert {r.status for r in results.values()} == {"sent"} and len(results) == 12
    assert max(peak_per_key.values()) == 1
    assert peak_total[0] >= 3  # customers were sent to in parallel
    assert stripe_emulator.meter_event_totals(meter=meter.id)["total"] == "12"


def test_429s_are_retried_with_backoff_until_they_pass(stripe_emulator, customers_and_meter):
    from stripe_emulator.errors import StripeError

    client, meter, customers = customers_and_meter
    remaining = {"n": 2}

    def rate_limited(ctx, call_next):
        if ctx.path == "/v1/billing/meter_events" and remaining["n"]:
            remaining["n"] -= 1
            raise StripeError("Too many requests", status=429, type="invalid_request_error", code="rate_limit")
        return call_next()

    stripe_emulator.app.use(rate_limited, name="rate_limited")
    slept = []
    sender = MeterEventSender(client, per_second=1000, workers=1, backoff_initial=0.01, sleep=slept.append)

    [result] = sender.send_all(calls_for(customers[:1], meter, per_customer=1)).values()

    assert (result.status, result.attempts) == ("sent", 3)
    assert len([s for s in slept if s > 0]) >= 2  # backed off twice


def test_a_refused_event_fails_without_retrying(stripe_emulator, customers_and_meter):
    client, meter, customers = customers_and_meter
    [call] = calls_for(customers[:1], meter, per_customer=1)
    bad = MeterEventCall(call.report_id, call.key, {**call.params, "timestamp": 1}, call.identifier, 0)

    [result] = MeterEventSender(client, per_second=1000, workers=1).send_all([bad]).values()

    assert result.status == "failed" and result.attempts == 1
    assert "InvalidRequestError (HTTP 400" in result.error and "timestamp" in result.error


def test_stripes_duplicate_identifier_answer_counts_as_sent_whatever_its_param(stripe_emulator, customers_and_meter):
    from stripe_emulator.errors import InvalidRequest

    client, meter, customers = customers_and_meter
    [call] = calls_for(customers[:1], meter, per_customer=1)

    def duplicate(ctx, call_next):  # Stripe's message, with no param on the error
        if ctx.path == "/v1/billing/meter_events":
            raise InvalidRequest(f"An event already exists with identifier {call.identifier}.")
        return call_next()

    stripe_emulator.app.use(duplicate, name="duplicate")
    [result] = MeterEventSender(client, per_second=1000, workers=1).send_all([call]).values()

    assert (result.status, result.error) == ("sent", "")


def test_a_409_for_a_key_still_in_progress_is_retried_not_failed(stripe_emulator, customers_and_meter):
    from stripe_emulator.errors import StripeError

    client, meter, customers = customers_and_meter
    remaining = {"n": 1}

    def in_progress(ctx, call_next):
        if ctx.path == "/v1/billing/meter_events" and remaining["n"]:
            remaining["n"] -= 1
            raise StripeError("There is currently another in-progress request using this Idempotent Key.",
                              status=409, type="idempotency_error", code="idempotency_key_in_use")
        return call_next()

    stripe_emulator.app.use(in_progress, name="in_progress")
    sender = MeterEventSender(client, per_second=1000, workers=1, backoff_initial=0.01, sleep=lambda s: None)
    [result] = sender.send_all(calls_for(customers[:1], meter, per_customer=1)).values()

    assert (result.status, result.attempts) == ("sent", 2)
    assert stripe_emulator.meter_event_totals(meter=meter.id)["total"] == "1"


def test_a_run_after_a_crash_does_not_reuse_the_dead_runs_idempotency_keys(stripe_emulator, customers_and_meter):
    # The dead run's first attempt got a 500, which Stripe replays for its key for 24 hours.
    client, meter, customers = customers_and_meter
    [call] = calls_for(customers[:1], meter, per_customer=1)
    stripe_emulator.set_faults(rate_500=1.0, paths=["/v1/billing/meter_events"])
    dead = MeterEventSender(client, per_second=1000, workers=1, max_attempts=1)
    assert dead.send_all([call])[call.report_id].status == "pending"
    stripe_emulator.set_faults(rate_500=0.0)

    # The next run resends the row with the same attempt count (the dead run settled nothing).
    [result] = MeterEventSender(client, per_second=1000, workers=1, max_attempts=1).send_all([call]).values()

    assert result.status == "sent"
    keys = [r["idempotency_key"] for r in stripe_emulator.requests(path="/v1/billing/meter_events")]
    assert len(keys) == 2 and keys[0] != keys[1]
    assert stripe_emulator.meter_event_totals(meter=meter.id)["total"] == "1"


# --- the v2 meter event stream -------------------------------------------------------


def stream_sender(stripe_emulator, client, **options):
    from billing.stripe_api import get_stream_client  # noqa: F401 - shape reference
    import stripe

    def stream_client_for(token):
        return stripe.StripeClient(token, base_addresses={"api": stripe_emulator.url, "meter_events": stripe_emulator.url},
                                   http_client=stripe.HTTPXClient(allow_sync_methods=True), max_network_retries=0)

    from billing.services.meter_event_sender import MeterEventStreamSender

    return MeterEventStreamSender(client, stream_client_for=stream_client_for, per_second=10_000, workers=4,
                                  backoff_initial=0.01, **options)


def test_the_stream_sends_batches_of_at_most_100_and_counts_each_event_once(stripe_emulator, customers_and_meter):
    client, meter, customers = customers_and_meter
    calls = calls_for(customers, meter, per_customer=60)  # 240 events

    results = stream_sender(stripe_emulator, client).send_all(calls)

    assert {r.status for r in results.values()} == {"sent"} and len(results) == 240
    streamed = stripe_emulator.requests(method="POST", path="/v2/billing/meter_event_stream")
    assert len(streamed) == 3  # 100 + 100 + 40
    assert stripe_emulator.meter_event_totals(meter=meter.id)["total"] == "240"


def test_an_expired_session_is_renewed_and_the_batch_sent_once(stripe_emulator, customers_and_meter):
    client, meter, customers = customers_and_meter
    sender = stream_sender(stripe_emulator, client)
    sender.send_all(calls_for(customers[:1], meter, per_customer=1))
    stripe_emulator.advance_time(16 * 60)  # sessions last 15 minutes

    [result] = sender.send_all(calls_for(customers[1:2], meter, per_customer=1)).values()

    assert (result.status, result.attempts) == ("sent", 2)
    assert len(stripe_emulator.requests(method="POST", path="/v2/billing/meter_event_session")) == 2


def test_a_lost_stream_answer_is_retried_and_deduplicated(stripe_emulator, customers_and_meter):
    client, meter, customers = customers_and_meter
    stripe_emulator.set_faults(rate_lost=1.0, lost_mode="500", seed=1)
    calls = calls_for(customers, meter, per_customer=5)
    sender = stream_sender(stripe_emulator, client, max_attempts=2)

    first = sender.send_all(calls)
    assert {r.status for r in first.values()} == {"pending"}  # recorded, but we can't know

    stripe_emulator.reset_faults()
    again = sender.send_all(calls)  # the same identifiers, as a resend of pending rows is
    assert {r.status for r in again.values()} == {"sent"}
    assert stripe_emulator.meter_event_totals(meter=meter.id)["total"] == "20"
