"""A v2 stream call is validated and stored as one batch (meter_events.record): every
event must get the verdict it would get alone, after the ones before it. These tests
mix the cases inside single calls, where a batch that shared a read wrongly (one
customer's time, one meter's keys, the identifiers of the database but not of the
batch, settling after the insert) would give some event another verdict."""

from datetime import datetime, timezone
from decimal import Decimal

import pytest
import stripe

from .conftest import ts

T0 = ts(2026, 1, 10, 12)
END = ts(2026, 2, 10, 12)   # the first monthly period's end
HOUR = 3600
DAY = 86400


def iso(t: int) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def ev(identifier, customer=None, value="1", event_name="execution_seconds", timestamp=None,
       **payload):
    out = {"event_name": event_name, "identifier": identifier, "payload": dict(payload)}
    if customer is not None:
        out["payload"]["stripe_customer_id"] = customer
    if value is not None:
        out["payload"]["value"] = value
    if timestamp is not None:
        out["timestamp"] = iso(timestamp)
    return out


@pytest.fixture
def frozen(stripe_emulator):
    stripe_emulator.freeze_time(T0)
    return stripe_emulator


@pytest.fixture
def stream(frozen):
    return frozen.stream_client(max_network_retries=0)


def send(stream, *events):
    assert stream.v2.billing.meter_event_stream.create({"events": list(events)}) is None


def stored(emulator):
    return {e["identifier"]: e for e in emulator.meter_events()}


def test_identifiers_dedupe_within_the_batch_and_against_earlier_events(
        frozen, stream, client, meter, customer):
    client.v1.billing.meter_events.create({
        "event_name": "execution_seconds", "identifier": "v1-earlier",
        "payload": {"stripe_customer_id": customer.id, "value": "100"}})
    send(stream, ev("err-earlier", "cus_nobody"))   # stored as an error: still a used identifier
    send(stream,
         ev("a", customer.id, "1"), ev("a", customer.id, "2"),      # the first of a batch wins
         ev("v1-earlier", customer.id, "4"), ev("err-earlier", customer.id, "8"),
         ev("b", "cus_nobody", "16"), ev("b", customer.id, "32"),   # even when it is an error
         ev("a", customer.id, "64"), ev("c", customer.id, "128"))
    events = stored(frozen)
    assert sorted(events) == ["a", "b", "c", "err-earlier", "v1-earlier"]
    assert (events["a"]["value"], events["a"]["status"]) == ("1", "accepted")
    assert (events["b"]["customer"], events["b"]["error_code"]) == (
        "cus_nobody", "meter_event_customer_not_found")
    assert events["v1-earlier"]["value"] == "100" and events["err-earlier"]["value"] == "1"
    assert frozen.meter_event_totals(meter=meter.id)["total"] == "229"  # 100 + 1 + 128
    assert frozen.stats()["v2_stream_events"] == {"received": 9, "duplicates": 5}
    # A batch's identifiers are seen by v1 (the 400) and by the next batch (dropped).
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meter_events.create({
            "event_name": "execution_seconds", "identifier": "c",
            "payload": {"stripe_customer_id": customer.id, "value": "1"}})
    assert exc.value.param == "identifier"
    assert "An event already exists with identifier c." in exc.value.user_message
    # 24 hours later an identifier is free again.
    frozen.advance_time(24 * HOUR + 1)
    stream = frozen.stream_client(max_network_retries=0)  # the session expired meanwhile
    send(stream, ev("a", customer.id, "1000"), ev("a", customer.id, "2000"))
    assert [e["value"] for e in frozen.meter_events(identifier="a")] == ["1", "1000"]


def test_each_event_of_a_mixed_batch_gets_its_own_error_code(frozen, stream, client, meter,
                                                              customer):
    keyed = client.v1.billing.meters.create({
        "display_name": "Keyed", "event_name": "keyed", "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"type": "by_id", "event_payload_key": "account"},
        "value_settings": {"event_payload_key": "seconds"}})
    counted = client.v1.billing.meters.create({
        "display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "count"}})
    old = client.v1.billing.meters.create({
        "display_name": "Old", "event_name": "old_events", "default_aggregation": {"formula": "sum"}})
    client.v1.billing.meters.deactivate(old.id)
    gone = client.v1.customers.create({"name": "Gone"})
    client.v1.customers.delete(gone.id)
    live = client.v1.customers.create({"name": "Live"}, {"api_key": frozen.live_api_key})
    c = customer.id
    send(stream,
         ev("ok", c, "2"),
         ev("no-meter", c, event_name="nothing_here"),
         ev("archived", c, event_name="old_events"),
         ev("no-customer", None),
         ev("unknown", "cus_nobody"),
         ev("deleted", gone.id),
         ev("other-mode", live.id),
         ev("no-value", c, None),
         ev("not-a-number", c, "12abc"),
         ev("past", c, timestamp=T0 - 35 * DAY - 1),
         ev("past-edge", c, "4", timestamp=T0 - 35 * DAY),
         ev("future", c, timestamp=T0 + 5 * 60 + 1),
         ev("future-edge", c, "8", timestamp=T0 + 5 * 60),
         ev("digits", c, "1234567890123456"),
         ev("digits-ok", c, "0.000123456789012345"),
         # Each meter's own payload keys, in the same batch as the default ones.
         ev("keyed", None, None, event_name="keyed", account=c, seconds="16"),
         ev("keyed-default-keys", c, "32", event_name="keyed"),
         ev("counted", c, None, event_name="calls"))
    events = stored(frozen)
    expected = {
        "ok": (None, None),
        "no-meter": ("no_meter", "No active meter was found for event_name 'nothing_here'."),
        "archived": ("archived_meter",
                     f"The meter {old.id} for event_name 'old_events' is deactivated."),
        "no-customer": ("meter_event_no_customer_defined",
                        "Customer mapping key stripe_customer_id not found in payload."),
        "unknown": ("meter_event_customer_not_found", "No such customer: 'cus_nobody'."),
        "deleted": ("meter_event_customer_not_found", f"No such customer: '{gone.id}'."),
        "other-mode": ("meter_event_customer_not_found", f"No such customer: '{live.id}'."),
        "no-value": ("meter_event_value_not_found",
                     "The event payload has no value under the key 'value'."),
        "not-a-number": ("meter_event_invalid_value",
                         "The value '12abc' in the event payload is not a number."),
        "past": ("timestamp_too_far_in_past",
                 "The event timestamp cannot be more than 35 days in past. Expected a timestamp "
                 f"greater than or equal to {T0 - 35 * DAY}."),
        "past-edge": (None, None),
        "future": ("timestamp_in_future",
                   "The event timestamp cannot be more than 5 minutes in the future. Expected a "
                   f"timestamp less than or equal to {T0 + 5 * 60}."),
        "future-edge": (None, None),
        "digits": ("meter_event_value_too_many_digits",
                   "The value in the event payload can have at most 15 digits. Received "
                   "1234567890123456."),
        "digits-ok": (None, None),
        "keyed": (None, None),
        "keyed-default-keys": ("meter_event_no_customer_defined",
                               "Customer mapping key account not found in payload."),
        "counted": (None, None),
    }
    assert {k: (e["error_code"], e["error_message"]) for k, e in events.items()} == expected
    assert {k for k, e in events.items() if e["status"] == "accepted"} == {
        k for k, (code, _) in expected.items() if code is None}
    assert events["keyed"]["meter"] == keyed.id and events["keyed"]["value"] == "16"
    assert events["counted"]["meter"] == counted.id and events["counted"]["value"] is None
    assert events["no-meter"]["meter"] is None
    assert events["not-a-number"]["value"] is None
    assert Decimal(frozen.meter_event_totals(meter=meter.id)["total"]) == \
        Decimal("14.000123456789012345")
    assert frozen.stats()["v2_stream_events"] == {"received": len(expected), "duplicates": 0}
    # v1 answers the synchronous rules with 400s (and stores nothing) ...
    for params, param in (({"timestamp": T0 - 35 * DAY - 1}, "timestamp"),
                          ({"timestamp": T0 + 5 * 60 + 1}, "timestamp"),
                          ({"payload": {"stripe_customer_id": c, "value": "1234567890123456"}},
                           "payload[value]")):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.billing.meter_events.create({
                "event_name": "execution_seconds", "identifier": "sync",
                "payload": {"stripe_customer_id": c, "value": "1"}, **params})
        assert exc.value.http_status == 400 and exc.value.param == param
    assert frozen.meter_events(identifier="sync") == []
    # ... and the asynchronous ones as the stream does: 200, stored as an error.
    client.v1.billing.meter_events.create({"event_name": "execution_seconds", "identifier": "sync",
                                           "payload": {"stripe_customer_id": "cus_nobody"}})
    assert stored(frozen)["sync"]["error_code"] == "meter_event_customer_not_found"


def test_the_window_follows_each_customers_own_time(frozen, stream, client, meter, customer):
    clock_time = T0 - 60 * DAY
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": clock_time})
    on_clock = client.v1.customers.create({"name": "Clocked", "test_clock": clock.id})
    send(stream,
         ev("clock-past-ok", on_clock.id, "1", timestamp=clock_time - HOUR),
         ev("plain-same-time", customer.id, "2", timestamp=clock_time - HOUR),
         ev("clock-now", on_clock.id, "4"),
         ev("plain-now", customer.id, "8"),
         ev("clock-future", on_clock.id, "16", timestamp=clock_time + 10 * 60),
         ev("clock-at-real-now", on_clock.id, "32", timestamp=T0),
         ev("clock-too-old", on_clock.id, "64", timestamp=clock_time - 35 * DAY - 1))
    events = stored(frozen)
    assert {k: e["error_code"] for k, e in events.items()} == {
        "clock-past-ok": None, "plain-same-time": "timestamp_too_far_in_past",
        "clock-now": None, "plain-now": None,
        "clock-future": "timestamp_in_future", "clock-at-real-now": "timestamp_in_future",
        "clock-too-old": "timestamp_too_far_in_past"}
    # Without a timestamp, an event is stamped with its customer's time.
    assert events["clock-now"]["timestamp"] == clock_time
    assert events["plain-now"]["timestamp"] == T0
    assert f"less than or equal to {clock_time + 300}." in events["clock-future"]["error_message"]
    assert f"greater than or equal to {T0 - 35 * DAY}." in \
        events["plain-same-time"]["error_message"]
    assert frozen.meter_event_totals(customer=on_clock.id)["total"] == "5"
    assert frozen.meter_event_totals(customer=customer.id)["total"] == "8"


def test_a_late_event_counts_only_while_its_invoice_is_a_draft(frozen, stream, client,
                                                                metered_price):
    """In one batch: a customer whose draft is in its grace hour (a test clock); one
    whose period end and grace hour passed unnoticed, and one whose draft was made
    before its grace hour passed unnoticed (the emulator clock, no tick). The last two
    are settled (drafted and finalized, finalized) before the batch's events are
    stored, so their late events are not on the final invoices."""
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0})
    in_grace = client.v1.customers.create({"name": "In grace", "test_clock": clock.id})
    past_grace = client.v1.customers.create({"name": "Past grace"})
    drafted = client.v1.customers.create({"name": "Drafted"})
    subs = {c.id: client.v1.subscriptions.create({"customer": c.id,
                                                  "items": [{"price": metered_price.id}]})
            for c in (in_grace, past_grace, drafted)}
    send(stream, ev("g-1", in_grace.id, "10", timestamp=T0 + 60),
         ev("p-1", past_grace.id, "20", timestamp=T0 + 60),
         ev("d-1", drafted.id, "40", timestamp=T0 + 60))
    frozen.advance_test_clock(clock.id, END + 60)
    scheduler = frozen.app.scheduler
    with scheduler.hold():   # no tick settles the emulator clock's customers meanwhile
        assert scheduler.wait_idle(10)
        frozen.set_time(END + 60, freeze=True)
        stream = frozen.stream_client(max_network_retries=0)  # the session expired meanwhile
        send(stream, ev("d-2", drafted.id, "80", timestamp=END - 30))  # drafts its invoice
        frozen.set_time(END + HOUR + 60, freeze=True)
        stream = frozen.stream_client(max_network_retries=0)
        assert frozen.invoices(customer=past_grace.id) == []   # nothing settled it yet
        assert [i["status"] for i in frozen.invoices(customer=drafted.id)] == ["draft"]
        send(stream,
             ev("g-late", in_grace.id, "1", timestamp=END - 10),
             ev("p-late", past_grace.id, "2", timestamp=END - 10),
             ev("d-late", drafted.id, "160", timestamp=END - 10),
             ev("p-late-2", past_grace.id, "4", timestamp=END - 5),
             ev("p-next", past_grace.id, "8", timestamp=END + 10))
        [draft] = frozen.invoices(customer=in_grace.id)
        [final] = frozen.invoices(customer=past_grace.id)
        [drafted_final] = frozen.invoices(customer=drafted.id)
    assert draft["status"] == "draft"
    assert client.v1.invoices.retrieve(draft["id"]).lines.data[0].quantity_decimal == 11
    for invoice, quantity in ((final, 20), (drafted_final, 120)):
        assert (invoice["status"], invoice["period_end"]) == ("open", END)
        assert invoice["status_transitions"]["finalized_at"] == END + HOUR
        assert client.v1.invoices.retrieve(invoice["id"]).lines.data[0].quantity_decimal == \
            quantity
    assert client.v1.subscriptions.retrieve(subs[past_grace.id].id).latest_invoice == final["id"]
    # The late events are stored and counted by the meter, not by the final invoices.
    assert frozen.meter_event_totals(customer=past_grace.id)["total"] == "34"
    assert frozen.meter_event_totals(customer=drafted.id)["total"] == "280"
    finalized = [e for e in frozen.events() if e["type"] == "invoice.finalized"]
    assert sorted(e["data"]["object"]["customer"] for e in finalized) == sorted(
        [past_grace.id, drafted.id])
