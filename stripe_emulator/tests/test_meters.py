"""Billing meters, meter events (Stripe's validation rules) and event summaries."""

from decimal import Decimal

import pytest
import stripe

from .conftest import ts

NOW = ts(2026, 6, 15, 12, 0)


@pytest.fixture
def frozen(stripe_emulator):
    stripe_emulator.freeze_time(NOW)
    return stripe_emulator


def send(client, customer, value, **extra):
    return client.v1.billing.meter_events.create({
        "event_name": "execution_seconds",
        "payload": {"stripe_customer_id": customer.id, "value": value}, **extra})


# --- meters ----------------------------------------------------------------------


def test_meter_create_and_defaults(client, frozen):
    m = client.v1.billing.meters.create({
        "display_name": "Execution seconds", "event_name": "exec",
        "default_aggregation": {"formula": "sum"}})
    assert m.id.startswith("mtr_test_") and m.object == "billing.meter"
    assert m.customer_mapping.to_dict() == {"event_payload_key": "stripe_customer_id",
                                            "type": "by_id"}
    assert m.value_settings.to_dict() == {"event_payload_key": "value"}
    assert (m.status, m.event_time_window, m.created, m.updated) == ("active", None, NOW, NOW)
    assert m.status_transitions.deactivated_at is None


def test_meter_custom_keys_update_deactivate_reactivate_list(client, frozen):
    m = client.v1.billing.meters.create({
        "display_name": "GB", "event_name": "gb", "default_aggregation": {"formula": "last"},
        "customer_mapping": {"event_payload_key": "cust", "type": "by_id"},
        "value_settings": {"event_payload_key": "gigabytes"}, "event_time_window": "hour"})
    assert (m.customer_mapping.event_payload_key, m.value_settings.event_payload_key,
            m.event_time_window) == ("cust", "gigabytes", "hour")
    assert client.v1.billing.meters.update(m.id, {"display_name": "Gigabytes"}).display_name \
        == "Gigabytes"
    off = client.v1.billing.meters.deactivate(m.id)
    assert (off.status, off.status_transitions.deactivated_at) == ("inactive", NOW)
    assert [x.id for x in client.v1.billing.meters.list({"status": "inactive"}).data] == [m.id]
    assert client.v1.billing.meters.list({"status": "active"}).data == []
    on = client.v1.billing.meters.reactivate(m.id)
    assert (on.status, on.status_transitions.deactivated_at) == ("active", None)


@pytest.mark.parametrize("params, param", [
    ({"event_name": "e", "default_aggregation": {"formula": "sum"}}, "display_name"),
    ({"display_name": "d", "default_aggregation": {"formula": "sum"}}, "event_name"),
    ({"display_name": "d", "event_name": "e"}, "default_aggregation"),
    ({"display_name": "d", "event_name": "e", "default_aggregation": {"formula": "max"}},
     "default_aggregation[formula]"),
    ({"display_name": "d", "event_name": "e", "default_aggregation": {"formula": "sum"},
      "customer_mapping": {"event_payload_key": "c", "type": "by_email"}},
     "customer_mapping[type]"),
])
def test_meter_validation(client, params, param):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meters.create(params)
    assert exc.value.param == param


def test_event_name_belongs_to_one_active_meter(client, meter):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meters.create({"display_name": "dup", "event_name": meter.event_name,
                                         "default_aggregation": {"formula": "sum"}})
    assert exc.value.param == "event_name"


# --- meter events: synchronous rules ----------------------------------------------


def test_meter_event_response_and_exact_storage(client, meter, customer, frozen):
    ev = send(client, customer, "12.345", identifier="run-1")
    assert ev.object == "billing.meter_event"
    assert (ev.identifier, ev.timestamp, ev.created, ev.livemode) == ("run-1", NOW, NOW, False)
    assert ev.payload.to_dict() == {"stripe_customer_id": customer.id, "value": "12.345"}
    [stored] = frozen.meter_events()
    assert (stored["value"], stored["meter"], stored["customer"], stored["status"]) == (
        "12.345", meter.id, customer.id, "accepted")


def test_identifier_is_generated_when_absent(client, meter, customer, frozen):
    a, b = send(client, customer, "1"), send(client, customer, "1")
    assert a.identifier and b.identifier and a.identifier != b.identifier


def test_identifier_dedupe_within_24h_then_accepted_again(client, http, meter, customer,
                                                          frozen):
    send(client, customer, "5", identifier="dup-1")
    frozen.advance_time(24 * 3600 - 1)
    r = http.post("/v1/billing/meter_events", data={
        "event_name": "execution_seconds", "identifier": "dup-1",
        "payload[stripe_customer_id]": customer.id, "payload[value]": "5"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "An event already exists with identifier dup-1."
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.headers["Stripe-Should-Retry"] == "false"
    frozen.advance_time(1)  # 24h after the first one
    send(client, customer, "5", identifier="dup-1")
    assert [e["identifier"] for e in frozen.meter_events()] == ["dup-1", "dup-1"]
    assert frozen.meter_event_totals(meter=meter.id)["total"] == "10"


def test_dedupe_applies_to_events_that_failed_async_validation(client, http, frozen):
    # No meter at all: accepted (Stripe validates that asynchronously), still deduped.
    client.v1.billing.meter_events.create({"event_name": "nothing", "identifier": "x",
                                           "payload": {"value": "1"}})
    r = http.post("/v1/billing/meter_events", data={"event_name": "nothing",
                                                    "identifier": "x", "payload[value]": "1"})
    assert r.status_code == 400


@pytest.mark.parametrize("offset, ok", [
    (-35 * 86400, True), (-35 * 86400 - 1, False), (300, True), (301, False), (0, True),
])
def test_timestamp_window(http, meter, customer, frozen, offset, ok):
    r = http.post("/v1/billing/meter_events", data={
        "event_name": "execution_seconds", "timestamp": str(NOW + offset),
        "payload[stripe_customer_id]": customer.id, "payload[value]": "1"})
    if ok:
        assert r.status_code == 200 and r.json()["timestamp"] == NOW + offset
    else:
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["param"] == "timestamp"
        if offset < 0:
            assert err["message"] == (
                "The event timestamp cannot be more than 35 days in past. Expected a timestamp "
                f"greater than or equal to {NOW - 35 * 86400}.")
        else:
            assert "5 minutes in the future" in err["message"]
            assert str(NOW + 300) in err["message"]
        assert frozen.meter_events() == []


def test_timestamp_must_be_an_integer(http, meter, customer):
    r = http.post("/v1/billing/meter_events", data={
        "event_name": "execution_seconds", "timestamp": "soon",
        "payload[stripe_customer_id]": customer.id, "payload[value]": "1"})
    assert r.json()["error"]["code"] == "parameter_invalid_integer"


def test_required_params(http):
    r = http.post("/v1/billing/meter_events", data={"payload[value]": "1"})
    assert r.json()["error"]["param"] == "event_name"
    r = http.post("/v1/billing/meter_events", data={"event_name": "e"})
    assert r.json()["error"]["param"] == "payload"
    r = http.post("/v1/billing/meter_events", data={"event_name": "e", "identifier": "i" * 101,
                                                    "payload[value]": "1"})
    assert r.json()["error"]["param"] == "identifier"


def test_negative_and_decimal_values_are_accepted_and_summed_exactly(client, meter, customer,
                                                                     frozen):
    for v in ("0.1", "0.2", "-0.05", "100", "0.000000000001"):
        send(client, customer, v)
    assert frozen.meter_event_totals(meter=meter.id, customer=customer.id)["total"] == \
        "100.250000000001"


def test_more_than_15_significant_digits_is_400(http, meter, customer):
    base = {"event_name": "execution_seconds", "payload[stripe_customer_id]": customer.id}
    assert http.post("/v1/billing/meter_events",
                     data={**base, "payload[value]": "123456789012345"}).status_code == 200
    assert http.post("/v1/billing/meter_events",
                     data={**base, "payload[value]": "0.000123456789012345"}).status_code == 200
    r = http.post("/v1/billing/meter_events", data={**base, "payload[value]": "1234567890123456"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "payload[value]"
    assert "at most 15 digits" in r.json()["error"]["message"]


# --- meter events: asynchronous rules (accepted, then reported) ----------------------


def test_async_validation_errors_are_recorded_not_rejected(client, meter, customer, frozen):
    cases = {
        "no_meter": {"event_name": "unknown_event",
                     "payload": {"stripe_customer_id": customer.id, "value": "1"}},
        "meter_event_no_customer_defined": {"event_name": "execution_seconds",
                                            "payload": {"value": "1"}},
        "meter_event_customer_not_found": {"event_name": "execution_seconds",
                                           "payload": {"stripe_customer_id": "cus_ghost",
                                                       "value": "1"}},
        "meter_event_value_not_found": {"event_name": "execution_seconds",
                                        "payload": {"stripe_customer_id": customer.id}},
        "meter_event_invalid_value": {"event_name": "execution_seconds",
                                      "payload": {"stripe_customer_id": customer.id,
                                                  "value": "1e3"}},
    }
    for code, params in cases.items():
        ev = client.v1.billing.meter_events.create({**params, "identifier": code})
        assert ev.identifier == code  # 200, like Stripe
    errors = {e["identifier"]: e["error_code"] for e in frozen.meter_events(status="error")}
    assert errors == {code: code for code in cases}
    assert frozen.meter_event_totals(meter=meter.id)["count"] == 0


def test_events_for_a_deactivated_meter_are_archived_meter_errors(client, meter, customer,
                                                                  frozen):
    client.v1.billing.meters.deactivate(meter.id)
    send(client, customer, "3")
    [ev] = frozen.meter_events()
    assert (ev["status"], ev["error_code"]) == ("error", "archived_meter")


def test_custom_payload_keys(client, customer, frozen):
    m = client.v1.billing.meters.create({
        "display_name": "GB", "event_name": "gb", "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"event_payload_key": "account", "type": "by_id"},
        "value_settings": {"event_payload_key": "bytes"}})
    client.v1.billing.meter_events.create({"event_name": "gb", "payload": {
        "account": customer.id, "bytes": "2048"}})
    assert frozen.meter_event_totals(meter=m.id, customer=customer.id)["total"] == "2048"


def test_meter_event_adjustment_cancels_an_event(client, meter, customer, frozen):
    send(client, customer, "7", identifier="keep")
    send(client, customer, "9", identifier="oops")
    adj = client.v1.billing.meter_event_adjustments.create({
        "event_name": "execution_seconds", "type": "cancel", "cancel": {"identifier": "oops"}})
    assert (adj.object, adj.cancel.identifier) == ("billing.meter_event_adjustment", "oops")
    assert frozen.meter_event_totals(meter=meter.id)["total"] == "7"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_event_adjustments.create({
            "event_name": "execution_seconds", "type": "cancel",
            "cancel": {"identifier": "never-sent"}})


# --- event summaries --------------------------------------------------------------


def summaries(client, meter, customer, start, end, **extra):
    return client.v1.billing.meters.event_summaries.list(
        meter.id, {"customer": customer.id, "start_time": start, "end_time": end, **extra})


def test_summary_sums_exactly_over_half_open_range(client, meter, customer, frozen):
    day = ts(2026, 6, 15)
    other = client.v1.customers.create({"name": "other"})
    for offset, value in [(0, "1.5"), (3599, "2.25"), (3600, "10"), (7200, "100")]:
        send(client, customer, value, timestamp=day + offset)
    send(client, other, "1000", timestamp=day)
    res = summaries(client, meter, customer, day, day + 7200)  # end is exclusive
    [s] = res.data
    assert s.object == "billing.meter_event_summary"
    assert (s.start_time, s.end_time, s.meter, s.livemode) == (day, day + 7200, meter.id, False)
    assert s.id.startswith("mtrusg_test_")
    assert Decimal(str(s.aggregated_value)) == Decimal("13.75")


def test_hour_grouping(client, http, meter, customer, frozen):
    day = ts(2026, 6, 15)
    for offset, value in [(60, "1"), (120, "2"), (3600 + 5, "4"), (3 * 3600 - 1, "8")]:
        send(client, customer, value, timestamp=day + offset)
    res = summaries(client, meter, customer, day, day + 3 * 3600, value_grouping_window="hour")
    assert [(s.start_time - day, s.end_time - day, s.aggregated_value) for s in res.data] == [
        (0, 3600, 3), (3600, 7200, 4), (7200, 10800, 8)]
    # Raw JSON: integral sums are written as integers, fractions exactly.
    send(client, customer, "0.1", timestamp=day + 10)
    raw = http.get(f"/v1/billing/meters/{meter.id}/event_summaries", params={
        "customer": customer.id, "start_time": day, "end_time": day + 3600}).text
    assert '"aggregated_value": 3.1' in raw


def test_day_grouping_with_pagination(client, meter, customer, frozen):
    start = ts(2026, 6, 1)
    for d in range(12):
        send(client, customer, str(d + 1), timestamp=start + d * 86400 + 3600)
    page = summaries(client, meter, customer, start, start + 12 * 86400,
                     value_grouping_window="day", limit=5)
    assert [s.aggregated_value for s in page.data] == [1, 2, 3, 4, 5] and page.has_more
    all_values = [s.aggregated_value for s in summaries(
        client, meter, customer, start, start + 12 * 86400,
        value_grouping_window="day", limit=5).auto_paging_iter()]
    assert all_values == list(range(1, 13))


def test_count_and_last_formulas(client, customer, frozen):
    for formula in ("count", "last"):
        client.v1.billing.meters.create({"display_name": formula, "event_name": f"ev_{formula}",
                                         "default_aggregation": {"formula": formula}})
    day = ts(2026, 6, 14)
    for offset, value in [(600, "5"), (60, "7"), (1200, "2")]:
        for formula in ("count", "last"):
            client.v1.billing.meter_events.create({
                "event_name": f"ev_{formula}", "timestamp": day + offset,
                "payload": {"stripe_customer_id": customer.id, "value": value}})
    meters = {m.event_name: m for m in client.v1.billing.meters.list().data}
    count = summaries(client, meters["ev_count"], customer, day, day + 86400).data[0]
    last = summaries(client, meters["ev_last"], customer, day, day + 86400).data[0]
    assert (count.aggregated_value, last.aggregated_value) == (3, 2)  # last by timestamp


def test_pre_aggregated_meter_keeps_the_latest_event_per_window(client, customer, frozen):
    m = client.v1.billing.meters.create({"display_name": "gauge", "event_name": "gauge",
                                         "default_aggregation": {"formula": "sum"},
                                         "event_time_window": "hour"})
    hour = ts(2026, 6, 15, 9)
    for offset, value in [(10, "5"), (20, "8"), (3700, "1")]:
        client.v1.billing.meter_events.create({"event_name": "gauge", "timestamp": hour + offset,
                                               "payload": {"stripe_customer_id": customer.id,
                                                           "value": value}})
    [s] = summaries(client, m, customer, hour, hour + 2 * 3600).data
    assert s.aggregated_value == 9  # 8 (replaced 5) + 1


@pytest.mark.parametrize("params, param", [
    ({"start_time": NOW + 30, "end_time": NOW + 3600}, "start_time"),
    ({"start_time": NOW, "end_time": NOW + 90}, "end_time"),
    ({"start_time": NOW + 60, "end_time": NOW + 3600, "value_grouping_window": "hour"},
     "start_time"),
    ({"start_time": ts(2026, 6, 15, 1), "end_time": ts(2026, 6, 16),
      "value_grouping_window": "day"}, "start_time"),
    ({"start_time": NOW, "end_time": NOW}, "end_time"),
    ({"end_time": NOW}, "start_time"),
])
def test_summary_alignment_and_required_params(http, meter, customer, params, param):
    r = http.get(f"/v1/billing/meters/{meter.id}/event_summaries",
                 params={"customer": customer.id, **params})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


def test_summary_for_unknown_meter_is_404(http, customer):
    r = http.get("/v1/billing/meters/mtr_test_nope/event_summaries",
                 params={"customer": customer.id, "start_time": NOW, "end_time": NOW + 60})
    assert r.status_code == 404 and r.json()["error"]["code"] == "resource_missing"
