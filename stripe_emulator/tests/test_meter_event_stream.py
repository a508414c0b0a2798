"""The v2 meter event stream: sessions, batches, dedupe, limits, with stripe-python's v2 client."""

from datetime import datetime, timezone

import httpx
import pytest
import stripe

from stripe_emulator.pytest_plugin import LIVE_API_KEY

STREAM = "/v2/billing/meter_event_stream"


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def parse(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())


def ev(customer, identifier, value="1", **extra):
    out = {"event_name": "execution_seconds", "identifier": identifier,
           "payload": {"stripe_customer_id": customer, "value": value}}
    out.update(extra)
    return out


@pytest.fixture
def session(stripe_emulator):
    return stripe_emulator.client(max_network_retries=0).v2.billing.meter_event_session.create()


@pytest.fixture
def stream(stripe_emulator, session):
    return stripe_emulator.client(session.authentication_token, max_network_retries=0)


def test_session_shape_and_lifetime(stripe_emulator, session):
    assert session.object == "v2.billing.meter_event_session"
    assert session.livemode is False
    assert session.id and session.authentication_token
    assert parse(session.expires_at) - parse(session.created) == 15 * 60
    assert abs(parse(session.created) - stripe_emulator.now()) <= 2
    [logged] = stripe_emulator.requests(path="/v2/billing/meter_event_session")
    assert logged["status"] == 200


def test_a_batch_of_100_counts_exactly(stripe_emulator, stream, meter, customer):
    now = stripe_emulator.now()
    events = [ev(customer.id, f"b{i}", value=f"0.0{i % 7 + 1}", timestamp=iso(now - i))
              for i in range(100)]
    assert stream.v2.billing.meter_event_stream.create({"events": events}) is None
    totals = stripe_emulator.meter_event_totals(meter=meter.id)
    assert totals["count"] == 100
    assert totals["total"] == str(sum((i % 7 + 1) for i in range(100)) / 100).rstrip("0")
    stored = {e["identifier"]: e for e in stripe_emulator.meter_events()}
    assert stored["b5"]["timestamp"] == now - 5 and stored["b5"]["value"] == "0.06"
    [logged] = stripe_emulator.requests(path=STREAM)
    assert logged["status"] == 200 and logged["livemode"] is False


def test_101_events_are_refused_and_nothing_is_recorded(stripe_emulator, stream, meter,
                                                        customer):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        stream.v2.billing.meter_event_stream.create(
            {"events": [ev(customer.id, f"x{i}") for i in range(101)]})
    assert exc.value.http_status == 400
    err = exc.value.json_body["error"]
    assert err["type"] == "invalid_request_error" and "100" in err["message"]
    assert "request_log_url" not in err  # v2 shape
    assert stripe_emulator.meter_events() == []
    with pytest.raises(stripe.InvalidRequestError):
        stream.v2.billing.meter_event_stream.create({"events": []})


def test_identifiers_dedupe_within_a_batch_across_batches_and_with_v1(
        stripe_emulator, stream, client, meter, customer):
    client.v1.billing.meter_events.create(
        {"event_name": "execution_seconds", "identifier": "shared",
         "payload": {"stripe_customer_id": customer.id, "value": "100"}})
    stream.v2.billing.meter_event_stream.create(
        {"events": [ev(customer.id, "d1", "2"), ev(customer.id, "d1", "2"),
                    ev(customer.id, "shared", "5")]})
    stream.v2.billing.meter_event_stream.create({"events": [ev(customer.id, "d1", "2"),
                                                            ev(customer.id, "d2", "3")]})
    totals = stripe_emulator.meter_event_totals(meter=meter.id)
    assert (totals["count"], totals["total"]) == (3, "105")
    # And v1 sees identifiers sent on the stream.
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meter_events.create(
            {"event_name": "execution_seconds", "identifier": "d2",
             "payload": {"stripe_customer_id": customer.id, "value": "1"}})
    assert exc.value.param == "identifier"
    assert stripe_emulator.stats()["v2_stream_events"] == {"received": 5, "duplicates": 3}


def test_events_are_validated_asynchronously(stripe_emulator, stream, meter, customer):
    now = stripe_emulator.now()
    stream.v2.billing.meter_event_stream.create({"events": [
        ev("cus_nobody", "a1"),
        ev(customer.id, "a2", timestamp=iso(now - 36 * 86400)),
        ev(customer.id, "a3", timestamp=iso(now + 3600)),
        ev(customer.id, "a4", "abc"),
        ev(customer.id, "a5", "4"),
    ]})
    codes = {e["identifier"]: e["error_code"] for e in stripe_emulator.meter_events()}
    assert codes == {"a1": "meter_event_customer_not_found", "a2": "timestamp_too_far_in_past",
                     "a3": "timestamp_in_future", "a4": "meter_event_invalid_value",
                     "a5": None}
    assert stripe_emulator.meter_event_totals(meter=meter.id)["total"] == "4"


def test_malformed_requests_are_400(stripe_emulator, session, customer):
    headers = {"Authorization": f"Bearer {session.authentication_token}"}
    with httpx.Client(base_url=stripe_emulator.url, headers=headers) as c:
        form = c.post(STREAM, data={"events[0][event_name]": "x"})
        assert form.status_code == 400 and "json" in form.json()["error"]["message"]
        bad_ts = c.post(STREAM, json={"events": [ev(customer.id, "t", timestamp="yesterday")]})
        assert bad_ts.status_code == 400
        assert bad_ts.json()["error"]["param"] == "events[0].timestamp"
        unknown = c.post(STREAM, json={"events": [ev(customer.id, "u", color="red")]})
        assert unknown.json()["error"]["code"] == "parameter_unknown"
        number = c.post(STREAM, json={"events": [{"event_name": "execution_seconds",
                                                  "payload": {"value": 1}}]})
        assert number.status_code == 400
        ok = c.post(STREAM, json={"events": [ev(customer.id, "fine")]})
        assert (ok.status_code, ok.json()) == (200, {})
    assert len(stripe_emulator.meter_events()) == 1


def test_the_token_expires_after_15_minutes_of_the_emulator_clock(
        stripe_emulator, meter, customer):
    # The session is made on the frozen clock: made before it (by a fixture, then the
    # meter and customer fixtures), real seconds would pass and it could expire early.
    stripe_emulator.freeze_time()
    stream = stripe_emulator.stream_client(max_network_retries=0)
    stripe_emulator.advance_time(15 * 60 - 1)
    stream.v2.billing.meter_event_stream.create({"events": [ev(customer.id, "e1")]})
    stripe_emulator.advance_time(1)
    with pytest.raises(stripe.TemporarySessionExpiredError) as exc:
        stream.v2.billing.meter_event_stream.create({"events": [ev(customer.id, "e2")]})
    assert exc.value.http_status == 401
    err = exc.value.json_body["error"]
    assert (err["type"], err["code"]) == ("temporary_session_expired",
                                          "billing_meter_event_session_expired")
    assert [e["identifier"] for e in stripe_emulator.meter_events()] == ["e1"]
    # A new session works again.
    stripe_emulator.stream_client(max_network_retries=0).v2.billing.meter_event_stream.create(
        {"events": [ev(customer.id, "e2")]})
    assert stripe_emulator.meter_event_totals(meter=meter.id)["count"] == 2


def test_keys_and_tokens_are_not_interchangeable(stripe_emulator, session, customer):
    key_on_stream = stripe_emulator.client(max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError):
        key_on_stream.v2.billing.meter_event_stream.create({"events": [ev(customer.id, "k")]})
    token_on_v1 = stripe_emulator.client(session.authentication_token, max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError):
        token_on_v1.v1.customers.list()
    forged = stripe_emulator.client("ek_test_" + "x" * 48, max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError):
        forged.v2.billing.meter_event_stream.create({"events": [ev(customer.id, "k")]})
    assert stripe_emulator.meter_events() == []


def test_live_sessions_write_live_events(stripe_emulator):
    live = stripe_emulator.client(LIVE_API_KEY, max_network_retries=0)
    meter = live.v1.billing.meters.create({"display_name": "m", "event_name": "execution_seconds",
                                           "default_aggregation": {"formula": "sum"}})
    cus = live.v1.customers.create({"name": "live"})
    stream = stripe_emulator.stream_client(LIVE_API_KEY, max_network_retries=0)
    stream.v2.billing.meter_event_stream.create({"events": [ev(cus.id, "l1", "9")]})
    [stored] = stripe_emulator.meter_events()
    assert stored["livemode"] is True and stored["meter"] == meter.id


def test_the_stream_has_its_own_event_rate_limit(stripe_emulator, stream, meter, customer):
    stripe_emulator.set_faults(rate_limit_v2_test=150)
    stream.v2.billing.meter_event_stream.create(
        {"events": [ev(customer.id, f"r{i}") for i in range(100)]})
    with pytest.raises(stripe.RateLimitError) as exc:
        stream.v2.billing.meter_event_stream.create(
            {"events": [ev(customer.id, f"s{i}") for i in range(100)]})
    assert exc.value.http_status == 429
    assert exc.value.headers["Stripe-Rate-Limited-Reason"] == "endpoint-rate"
    assert exc.value.json_body["error"]["type"] == "rate_limit"
    assert stripe_emulator.meter_event_totals(meter=meter.id)["count"] == 100
    assert stripe_emulator.stats()["rate_limited"] == {"endpoint-rate": 1}


def test_faults_hit_the_stream_and_a_failed_v2_call_can_be_retried_with_its_key(
        stripe_emulator, session, meter, customer):
    headers = {"Authorization": f"Bearer {session.authentication_token}",
               "Idempotency-Key": "v2-key"}
    body = {"events": [ev(customer.id, "f1", "3")]}
    with httpx.Client(base_url=stripe_emulator.url, headers=headers) as c:
        stripe_emulator.set_faults(rate_500=1.0)
        failed = c.post(STREAM, json=body)
        assert failed.status_code == 500 and failed.json()["error"]["type"] == "api_error"
        assert "Stripe-Should-Retry" not in failed.headers
        stripe_emulator.set_faults(rate_500=0.0, rate_lost=1.0)
        with pytest.raises(httpx.RemoteProtocolError):
            c.post(STREAM, json=body)
        stripe_emulator.set_faults(rate_lost=0.0)
        again = c.post(STREAM, json=body)
        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert stripe_emulator.meter_event_totals(meter=meter.id)["count"] == 1
