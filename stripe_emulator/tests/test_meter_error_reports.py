"""Meter error reports as thin events: async validation, /v2/core/events, event destinations."""

import json
import time

import httpx
import pytest
import stripe

from stripe_emulator.pytest_plugin import LIVE_API_KEY

REPORT = "v1.billing.meter.error_report_triggered"
NO_METER = "v1.billing.meter.no_meter_found"


def ev(customer, identifier, value="1", event_name="execution_seconds", **payload):
    body = {"value": value, **payload}
    if customer is not None:
        body["stripe_customer_id"] = customer
    return {"event_name": event_name, "identifier": identifier, "payload": body}


@pytest.fixture
def api(stripe_emulator):
    return stripe_emulator.client(max_network_retries=0)


@pytest.fixture
def stream(stripe_emulator):
    return stripe_emulator.stream_client(max_network_retries=0)


def send_bad_batch(stream, customer):
    stream.v2.billing.meter_event_stream.create({"events": [
        ev(customer.id, "ok-1", "5"),
        ev("cus_doesnotexist", "nf-1"), ev("cus_doesnotexist", "nf-2"),
        ev(None, "nocust-1"),
        ev(customer.id, "bad-value-1", "ten"),
        ev(customer.id, "nomtr-1", event_name="nobody_meters_this"),
    ]})


def by_code(data):
    return {t["code"]: t for t in data["reason"]["error_types"]}


def test_invalid_stream_events_are_not_counted_and_reported_per_meter(
        stripe_emulator, api, stream, meter, customer):
    send_bad_batch(stream, customer)
    assert stripe_emulator.meter_event_totals(meter=meter.id)["total"] == "5"
    assert stripe_emulator.thin_events() == []  # validation has not run yet

    emitted = stripe_emulator.validate_meter_events()
    assert sorted(e["type"] for e in emitted) == [REPORT, NO_METER]

    [listed] = api.v2.core.events.list({"object_id": meter.id}).data
    assert listed.type == REPORT and listed.object == "v2.core.event"
    event = api.v2.core.events.retrieve(listed.id)
    assert isinstance(event, stripe.events.V1BillingMeterErrorReportTriggeredEvent)
    assert event.related_object.id == meter.id
    assert event.related_object.type == "billing.meter"
    assert event.related_object.url == f"/v1/billing/meters/{meter.id}"
    assert event.livemode is False and event.context is None and event.changes is None
    assert event.data.reason.error_count == 4
    assert event.data.developer_message_summary == "There are 4 invalid events"
    types = {t.code: t for t in event.data.reason.error_types}
    assert {c: t.error_count for c, t in types.items()} == {
        "meter_event_customer_not_found": 2, "meter_event_no_customer_defined": 1,
        "meter_event_invalid_value": 1}
    assert [s["request"]["identifier"] for s in types["meter_event_customer_not_found"].sample_errors] \
        == ["nf-1", "nf-2"]
    [sample] = types["meter_event_no_customer_defined"].sample_errors
    assert sample["request"]["identifier"] == "nocust-1"
    assert sample.error_message == "Customer mapping key stripe_customer_id not found in payload."
    assert event.data.validation_start <= event.data.validation_end
    assert event.data.validation_end.endswith("Z")

    [no_meter] = api.v2.core.events.list({"types": [NO_METER]}).data
    fetched = api.v2.core.events.retrieve(no_meter.id)
    assert isinstance(fetched, stripe.events.V1BillingMeterNoMeterFoundEvent)
    [t] = fetched.data.reason.error_types
    assert t.code == "no_meter" and t.sample_errors[0]["request"]["identifier"] == "nomtr-1"


def test_each_run_reports_only_new_errors(stripe_emulator, stream, meter, customer):
    assert stripe_emulator.validate_meter_events() == []
    stream.v2.billing.meter_event_stream.create({"events": [ev("cus_nope", "a-1")]})
    [first] = stripe_emulator.validate_meter_events()
    assert stripe_emulator.validate_meter_events() == []
    stream.v2.billing.meter_event_stream.create({"events": [ev(customer.id, "ok", "2")]})
    assert stripe_emulator.validate_meter_events() == []  # no errors, no report
    stripe_emulator.advance_time(60)
    stream.v2.billing.meter_event_stream.create({"events": [ev("cus_nope", "a-2")]})
    [second] = stripe_emulator.validate_meter_events()
    assert first["data"]["reason"]["error_count"] == 1
    assert [s["request"]["identifier"] for s in
            by_code(second["data"])["meter_event_customer_not_found"]["sample_errors"]] == ["a-2"]
    assert second["data"]["validation_start"] > first["data"]["validation_end"]


def test_sample_errors_are_capped_but_counts_are_exact(stripe_emulator, stream, meter):
    stream.v2.billing.meter_event_stream.create(
        {"events": [ev("cus_nope", f"x-{i}") for i in range(12)]})
    [report] = stripe_emulator.validate_meter_events()
    t = by_code(report["data"])["meter_event_customer_not_found"]
    assert t["error_count"] == 12 and report["data"]["reason"]["error_count"] == 12
    assert [s["request"]["identifier"] for s in t["sample_errors"]] == [f"x-{i}" for i in range(5)]


def test_v1_async_errors_are_reported_too(stripe_emulator, api, meter, customer):
    api.v1.billing.meter_events.create({"event_name": "execution_seconds", "identifier": "v1-a",
                                        "payload": {"stripe_customer_id": "cus_gone",
                                                    "value": "1"}})
    [report] = stripe_emulator.validate_meter_events()
    assert report["type"] == REPORT
    assert by_code(report["data"])["meter_event_customer_not_found"]["error_count"] == 1


def test_archived_meter_errors_go_to_that_meter(stripe_emulator, api, stream, meter, customer):
    api.v1.billing.meters.deactivate(meter.id)
    stream.v2.billing.meter_event_stream.create({"events": [ev(customer.id, "arch-1")]})
    [report] = stripe_emulator.validate_meter_events()
    assert report["related_object"]["id"] == meter.id
    assert list(by_code(report["data"])) == ["archived_meter"]


def test_events_list_filters_pagination_and_modes(stripe_emulator, api, http, stream, meter,
                                                  customer):
    for i in range(3):
        stream.v2.billing.meter_event_stream.create({"events": [ev("cus_nope", f"p-{i}")]})
        stripe_emulator.validate_meter_events()
    page = http.get("/v2/core/events", params={"object_id": meter.id, "limit": 2}).json()
    assert len(page["data"]) == 2 and page["previous_page_url"] is None
    assert page["next_page_url"].startswith("/v2/core/events?")
    rest = http.get(page["next_page_url"]).json()
    assert len(rest["data"]) == 1 and rest["next_page_url"] is None
    ids = [e["id"] for e in page["data"] + rest["data"]]
    assert len(set(ids)) == 3 and all(i.startswith("evt_test_") for i in ids)
    # the auto-paging iterator of stripe-python follows next_page_url
    assert [e.id for e in api.v2.core.events.list({"limit": 1}).auto_paging_iter()] == ids
    assert http.get("/v2/core/events", params={"object_id": "mtr_other"}).json()["data"] == []
    assert http.get("/v2/core/events", params={"types[0]": NO_METER}).json()["data"] == []
    live = stripe_emulator.client(LIVE_API_KEY).v2.core.events.list()
    assert live.data == []
    missing = http.get("/v2/core/events/evt_test_nope")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"


def test_event_destination_create_returns_the_secret_once(api, receiver):
    dest = api.v2.core.event_destinations.create({
        "name": "errors", "type": "webhook_endpoint", "event_payload": "thin",
        "enabled_events": [REPORT], "webhook_endpoint": {"url": receiver.url},
        "include": ["webhook_endpoint.signing_secret", "webhook_endpoint.url"]})
    assert dest.object == "v2.core.event_destination" and dest.id.startswith("ed_test_")
    assert dest.status == "enabled" and dest.event_payload == "thin"
    assert dest.webhook_endpoint.signing_secret.startswith("whsec_")
    assert dest.webhook_endpoint.url == receiver.url
    again = api.v2.core.event_destinations.retrieve(dest.id)
    assert again.webhook_endpoint.signing_secret is None and again.webhook_endpoint.url is None
    assert again.created.endswith("Z") and again.enabled_events == [REPORT]
    assert [d.id for d in api.v2.core.event_destinations.list().data] == [dest.id]
    plain = api.v2.core.event_destinations.create({
        "name": "plain", "type": "webhook_endpoint", "event_payload": "thin",
        "enabled_events": [REPORT], "webhook_endpoint": {"url": receiver.url}})
    assert plain.webhook_endpoint.signing_secret is None
    with pytest.raises(stripe.InvalidRequestError):
        api.v2.core.event_destinations.create({
            "name": "x", "type": "webhook_endpoint", "event_payload": "thin",
            "enabled_events": [REPORT]})
    api.v2.core.event_destinations.delete(plain.id)
    assert [d.id for d in api.v2.core.event_destinations.list().data] == [dest.id]


def test_thin_events_are_delivered_signed_and_parse_with_stripe_python(
        stripe_emulator, api, stream, receiver, meter, customer):
    secret = api.v2.core.event_destinations.create({
        "name": "errors", "type": "webhook_endpoint", "event_payload": "thin",
        "enabled_events": [REPORT, NO_METER], "webhook_endpoint": {"url": receiver.url},
        "include": ["webhook_endpoint.signing_secret"]}).webhook_endpoint.signing_secret
    other = api.v2.core.event_destinations.create({
        "name": "pings only", "type": "webhook_endpoint", "event_payload": "thin",
        "enabled_events": ["v2.core.event_destination.ping"],
        "webhook_endpoint": {"url": receiver.url + "other"}})
    send_bad_batch(stream, customer)
    stripe_emulator.validate_meter_events()
    assert stripe_emulator.flush_webhooks(timeout=10)
    assert len(receiver.requests) == 2
    parsed = {}
    for r in receiver.requests:
        body = json.loads(r["body"])
        assert "data" not in body and body["object"] == "v2.core.event"
        note = api.parse_event_notification(r["body"], r["headers"]["Stripe-Signature"], secret)
        parsed[note.type] = note
    report = parsed[REPORT]
    assert isinstance(report, stripe.events.V1BillingMeterErrorReportTriggeredEventNotification)
    assert report.related_object.id == meter.id
    assert report.fetch_related_object().id == meter.id
    full = report.fetch_event()
    assert full.data.reason.error_count == 4
    assert parsed[NO_METER].fetch_event().data.reason.error_types[0].code == "no_meter"
    deliveries = stripe_emulator.webhook_deliveries(endpoint=other.id)
    assert deliveries == []


def test_disabled_destinations_get_nothing_and_ping_reaches_one(
        stripe_emulator, api, stream, receiver, meter):
    dest = api.v2.core.event_destinations.create({
        "name": "errors", "type": "webhook_endpoint", "event_payload": "thin",
        "enabled_events": [REPORT], "webhook_endpoint": {"url": receiver.url},
        "include": ["webhook_endpoint.signing_secret"]})
    assert api.v2.core.event_destinations.disable(dest.id).status == "disabled"
    stream.v2.billing.meter_event_stream.create({"events": [ev("cus_nope", "d-1")]})
    stripe_emulator.validate_meter_events()
    assert stripe_emulator.flush_webhooks(timeout=10)
    assert receiver.requests == []
    assert api.v2.core.event_destinations.enable(dest.id).status == "enabled"
    ping = api.v2.core.event_destinations.ping(dest.id)
    assert ping.type == "v2.core.event_destination.ping"
    assert stripe_emulator.flush_webhooks(timeout=10)
    [r] = receiver.requests
    note = api.parse_event_notification(r["body"], r["headers"]["Stripe-Signature"],
                                        dest.webhook_endpoint.signing_secret)
    assert note.id == ping.id and note.related_object.id == dest.id


def test_snapshot_destinations_receive_v1_events(stripe_emulator, api, receiver):
    dest = api.v2.core.event_destinations.create({
        "name": "v1", "type": "webhook_endpoint", "event_payload": "snapshot",
        "snapshot_api_version": "2026-08-26.dahlia", "enabled_events": ["customer.created"],
        "webhook_endpoint": {"url": receiver.url},
        "include": ["webhook_endpoint.signing_secret"]})
    api.v1.customers.create({"email": "b@example.com"})
    assert stripe_emulator.flush_webhooks(timeout=10)
    [r] = receiver.requests
    event = stripe.Webhook.construct_event(r["body"], r["headers"]["Stripe-Signature"],
                                           dest.webhook_endpoint.signing_secret)
    assert event.type == "customer.created" and event.object == "event"


def test_control_api_validates_and_auto_validation_follows_the_tick(
        stripe_emulator, stream, meter):
    stream.v2.billing.meter_event_stream.create({"events": [ev("cus_nope", "c-1")]})
    with httpx.Client(base_url=stripe_emulator.url, timeout=10) as control:
        assert control.get("/_emulator/meter_events/validation").json() == {"auto": False}
        out = control.post("/_emulator/meter_events/validate").json()
        assert out["count"] == 1 and out["data"][0]["type"] == REPORT
        assert out["data"][0]["data"]["reason"]["error_count"] == 1
        assert control.post("/_emulator/meter_events/validation",
                            data={"auto": "true"}).json() == {"auto": True}
    stream.v2.billing.meter_event_stream.create({"events": [ev("cus_nope", "c-2")]})
    deadline = time.monotonic() + 15  # the scheduler ticks every second
    while time.monotonic() < deadline and len(stripe_emulator.thin_events(type=REPORT)) < 2:
        time.sleep(0.05)
    reports = stripe_emulator.thin_events(type=REPORT, object_id=meter.id)
    assert len(reports) == 2
    assert reports[1]["data"]["reason"]["error_types"][0]["sample_errors"][0]["request"] == {
        "identifier": "c-2"}
