"""Events (retrieve, list, type filter) and webhook endpoints: signed delivery from a
background worker, retries, only the enabled event types."""

import json

import httpx
import pytest
import stripe

from stripe_emulator import fixtures

from .conftest import ts


def endpoint(client, receiver, events=("*",)):
    return client.v1.webhook_endpoints.create({
        "url": receiver.url, "enabled_events": list(events), "api_version": "2026-08-26.dahlia",
        "description": "Epsilon", "metadata": {"djstripe_uuid": "u1"}})


def test_events_are_recorded_and_listed(client, http, stripe_emulator):
    customer = client.v1.customers.create({"email": "a@example.com"},
                                          {"idempotency_key": "create-ada"})
    client.v1.customers.update(customer.id, {"metadata": {"plan": "pro"}})
    client.v1.customers.update(customer.id, {"metadata": {"plan": "pro"}})  # no change: no event
    client.v1.products.create({"name": "P"})
    listed = client.v1.events.list()
    assert [e.type for e in listed.data] == ["product.created", "customer.updated",
                                             "customer.created"]
    created = listed.data[2]
    assert set(created.to_dict()) == set(fixtures.shape("event"))
    assert (created.api_version, created.data.object.id, created.pending_webhooks) == (
        "2026-08-26.dahlia", customer.id, 0)
    assert created["request"]["idempotency_key"] == "create-ada"
    assert created["request"]["id"].startswith("req_")
    assert listed.data[1].data.previous_attributes.to_dict() == {"metadata": {"plan": None}}
    assert client.v1.events.retrieve(created.id).id == created.id
    assert [e.type for e in client.v1.events.list({"type": "customer.*"}).data] == [
        "customer.updated", "customer.created"]
    assert [e.type for e in client.v1.events.list({"types": ["product.created"]}).data] == [
        "product.created"]
    r = http.get("/v1/events/evt_nope")
    assert r.status_code == 404


def test_webhook_endpoint_crud_and_secret_only_on_create(client, receiver):
    created = endpoint(client, receiver, ["invoice.created"])
    assert created.id.startswith("we_") and created.secret.startswith("whsec_")
    assert (created.status, created.api_version, created.metadata.to_dict()) == (
        "enabled", "2026-08-26.dahlia", {"djstripe_uuid": "u1"})
    got = client.v1.webhook_endpoints.retrieve(created.id)
    assert "secret" not in got
    assert set(got.to_dict()) == set(fixtures.shape("webhook_endpoint"))
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [created.id]
    upd = client.v1.webhook_endpoints.update(created.id, {"disabled": True,
                                                          "enabled_events": ["*"]})
    assert (upd.status, upd.enabled_events) == ("disabled", ["*"])
    assert client.v1.webhook_endpoints.delete(created.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.webhook_endpoints.create({"url": "ftp://x", "enabled_events": ["*"]})


def test_delivery_is_signed_like_stripe(client, receiver, stripe_emulator):
    secret = endpoint(client, receiver).secret
    customer = client.v1.customers.create({"name": "Ada"})
    assert stripe_emulator.flush_webhooks()
    [request] = receiver.requests
    body, header = request["body"], request["headers"]["Stripe-Signature"]
    stripe.WebhookSignature.verify_header(body, header, secret, tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body, header, "whsec_wrong", tolerance=300)
    event = stripe.Webhook.construct_event(body, header, secret)
    assert (event.type, event.data.object.id) == ("customer.created", customer.id)
    assert request["headers"]["Content-Type"].startswith("application/json")
    # Delivered: the event no longer waits for a webhook.
    assert client.v1.events.retrieve(event.id).pending_webhooks == 0


def test_retries_on_errors_until_success(client, receiver, stripe_emulator):
    endpoint(client, receiver, ["customer.created"])
    receiver.statuses = [500, 503]
    client.v1.customers.create({"name": "Ada"})
    assert stripe_emulator.flush_webhooks()
    assert len(receiver.requests) == 3
    assert len({json.loads(r["body"])["id"] for r in receiver.requests}) == 1
    [delivery] = stripe_emulator.webhook_deliveries()
    assert delivery["status"] == "succeeded"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 200]
    assert [a["error"] for a in delivery["attempts"]] == ["HTTP 500", "HTTP 503", None]
    assert all(a["duration_ms"] >= 0 for a in delivery["attempts"])


def test_gives_up_after_the_retry_schedule_and_survives_connection_errors(
        client, stripe_emulator):
    client.v1.webhook_endpoints.create({"url": "http://127.0.0.1:9/nothing-listens",
                                        "enabled_events": ["*"]})
    event_id = None
    client.v1.customers.create({"name": "Ada"})
    assert stripe_emulator.flush_webhooks()
    [delivery] = stripe_emulator.webhook_deliveries()
    event_id = delivery["event"]
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == 1 + len(stripe_emulator.server.app.webhooks.retry_delays)
    assert all(a["status_code"] is None and "Error" in a["error"] for a in delivery["attempts"])
    assert client.v1.events.retrieve(event_id).pending_webhooks == 1


def test_only_enabled_event_types_and_endpoints_are_delivered(client, receiver, stripe_emulator):
    endpoint(client, receiver, ["invoice.created"])
    disabled = endpoint(client, receiver, ["*"])
    client.v1.webhook_endpoints.update(disabled.id, {"disabled": True})
    client.v1.customers.create({"name": "Ada"})
    client.v1.products.create({"name": "P"})
    assert stripe_emulator.flush_webhooks()
    assert receiver.requests == []
    assert stripe_emulator.webhook_deliveries() == []


def test_billing_cycle_webhooks_reach_the_receiver_in_order(
        client, receiver, metered_price, stripe_emulator):
    secret = endpoint(client, receiver, ["customer.subscription.updated", "invoice.created",
                                         "invoice.finalized"]).secret
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": ts(2026, 1, 10, 12)})
    customer = client.v1.customers.create({"test_clock": clock.id})
    client.v1.subscriptions.create({"customer": customer.id,
                                    "items": [{"price": metered_price.id}]})
    stripe_emulator.advance_test_clock(clock.id, ts(2026, 2, 10, 14))
    assert stripe_emulator.wait_idle()
    for r in receiver.requests:
        stripe.WebhookSignature.verify_header(r["body"], r["headers"]["Stripe-Signature"],
                                              secret, tolerance=300)
    assert [e["type"] for e in receiver.events()] == [
        "customer.subscription.updated", "invoice.created", "invoice.finalized"]


def test_control_api_flush_and_deliveries(client, receiver, stripe_emulator):
    endpoint(client, receiver)
    client.v1.customers.create({"name": "Ada"})
    flushed = httpx.post(f"{stripe_emulator.url}/_emulator/webhooks/flush",
                         data={"timeout": "5"}).json()
    assert flushed == {"done": True, "pending": 0}
    listed = httpx.get(f"{stripe_emulator.url}/_emulator/webhook_deliveries",
                       params={"status": "succeeded"}).json()
    assert [d["type"] for d in listed["data"]] == ["customer.created"]
    assert "_secret" not in listed["data"][0]
