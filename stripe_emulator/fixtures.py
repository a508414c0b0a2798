"""Object shapes from Stripe's own example objects (data/shapes.json, a subset of
Stripe's fixtures for API 2026-08-26.dahlia).

`template(name)` gives a fresh object with every key of Stripe's example and
values that make sense for a new object (the examples carry filler such as
`package_dimensions.height = 1221029593` or a discount on every customer).
Resources start from a template and fill in what the request said, so every
response has all of Stripe's keys.
"""

from __future__ import annotations

import copy
import json
import os
from functools import lru_cache

_PATH = os.path.join(os.path.dirname(__file__), "data", "shapes.json")


@lru_cache(maxsize=1)
def shapes() -> dict:
    with open(_PATH, encoding="utf-8") as f:
        return json.load(f)["resources"]


def shape(name: str) -> dict:
    """Stripe's example object, untouched (used by the shape-conformance tests)."""
    return copy.deepcopy(shapes()[name])


_NULL_ADDRESS = {"city": None, "country": None, "line1": None, "line2": None,
                 "postal_code": None, "state": None}

# Values a brand-new object has. Every key of Stripe's example is listed (the
# shape tests check this), so no example filler leaks into responses.
DEFAULTS = {
    "product": {
        "active": True, "created": 0, "default_price": None, "description": None,
        "id": None, "images": [], "livemode": False, "marketing_features": [],
        "metadata": {}, "name": None, "object": "product", "package_dimensions": None,
        "shippable": None, "statement_descriptor": None, "tax_code": None,
        "type": "service", "unit_label": None, "updated": 0, "url": None,
    },
    "price": {
        "active": True, "billing_scheme": "per_unit", "created": 0, "currency": None,
        "custom_unit_amount": None, "id": None, "livemode": False, "lookup_key": None,
        "metadata": {}, "nickname": None, "object": "price", "product": None,
        "recurring": None, "tax_behavior": "unspecified", "tiers_mode": None,
        "transform_quantity": None, "type": "one_time", "unit_amount": None,
        "unit_amount_decimal": None,
    },
    "plan": {
        "active": True, "amount": None, "amount_decimal": None, "billing_scheme": "per_unit",
        "created": 0, "currency": None, "id": None, "interval": "month", "interval_count": 1,
        "livemode": False, "metadata": {}, "meter": None, "nickname": None, "object": "plan",
        "product": None, "tiers_mode": None, "transform_usage": None,
        "trial_period_days": None, "usage_type": "licensed",
    },
    "customer": {
        "address": None, "balance": 0, "created": 0, "currency": None, "default_source": None,
        "delinquent": False, "description": None, "discount": None, "email": None, "id": None,
        "invoice_prefix": None,
        "invoice_settings": {"custom_fields": None, "default_payment_method": None,
                             "footer": None, "rendering_options": None},
        "livemode": False, "metadata": {}, "name": None, "next_invoice_sequence": 1,
        "object": "customer", "phone": None, "preferred_locales": [], "shipping": None,
        "tax_exempt": "none", "test_clock": None,
    },
    "subscription": {
        "application": None, "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": 0, "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic"},
        "billing_schedules": [], "billing_thresholds": None, "cancel_at": None,
        "cancel_at_period_end": False, "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically", "created": 0, "currency": None,
        "customer": None, "customer_account": None, "days_until_due": None,
        "default_payment_method": None, "default_source": None, "default_tax_rates": [],
        "description": None, "discounts": [], "ended_at": None, "id": None,
        "invoice_settings": {"account_tax_ids": None, "custom_fields": None,
                             "description": None, "footer": None,
                             "issuer": {"type": "self"}},
        "items": None, "latest_invoice": None, "livemode": False,
        "managed_payments": {"enabled": False}, "metadata": {},
        "next_pending_invoice_item_invoice": None, "object": "subscription",
        "on_behalf_of": None, "pause_collection": None,
        "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                             "save_default_payment_method": "off"},
        "pending_invoice_item_interval": None, "pending_setup_intent": None,
        "pending_update": None, "schedule": None, "start_date": 0, "status": "active",
        "test_clock": None, "transfer_data": None, "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    },
    "subscription_item": {
        "billing_thresholds": None, "created": 0, "current_period_end": 0,
        "current_period_start": 0, "discounts": [], "id": None, "metadata": {},
        "object": "subscription_item", "plan": None, "price": None, "quantity": 1,
        "subscription": None, "tax_rates": [],
    },
    "billing.meter": {
        "created": 0,
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "default_aggregation": {"formula": "sum"}, "display_name": None, "event_name": None,
        "event_time_window": None, "id": None, "livemode": False, "object": "billing.meter",
        "status": "active", "status_transitions": {"deactivated_at": None}, "updated": 0,
        "value_settings": {"event_payload_key": "value"},
    },
    "billing.meter_event": {
        "created": 0, "event_name": None, "identifier": None, "livemode": False,
        "object": "billing.meter_event", "payload": {}, "timestamp": 0,
    },
    "billing.meter_event_summary": {
        "aggregated_value": 0, "end_time": 0, "id": None, "livemode": False, "meter": None,
        "object": "billing.meter_event_summary", "start_time": 0,
    },
    "billing.meter_event_adjustment": {
        "cancel": None, "event_name": None, "livemode": False,
        "object": "billing.meter_event_adjustment", "status": "complete", "type": "cancel",
    },
    "account": {
        "business_profile": {
            "annual_revenue": None, "estimated_worker_count": None, "mcc": None,
            "minority_owned_business_designation": None,
            "name": "Local Stripe emulator", "product_description": None,
            "support_address": None, "support_email": None, "support_phone": None,
            "support_url": None, "url": None,
        },
        "business_type": None, "capabilities": {"card_payments": "active", "transfers": "active"},
        "charges_enabled": True, "controller": {"type": "account"}, "country": "US",
        "created": 0, "default_currency": "usd", "details_submitted": True,
        "email": "emulator@localhost", "external_accounts": None,
        "future_requirements": {"alternatives": [], "current_deadline": None,
                                "currently_due": [], "disabled_reason": None, "errors": [],
                                "eventually_due": [], "past_due": [],
                                "pending_verification": []},
        "id": None, "metadata": {}, "object": "account", "payouts_enabled": True,
        "requirements": {"alternatives": [], "current_deadline": None, "currently_due": [],
                         "disabled_reason": None, "errors": [], "eventually_due": [],
                         "past_due": [], "pending_verification": []},
        "settings": None, "tos_acceptance": {"date": None, "ip": None, "user_agent": None},
        "type": "standard",
    },
    "test_helpers.test_clock": {
        "created": 0, "deletes_after": 0, "frozen_time": 0, "id": None, "livemode": False,
        "name": None, "object": "test_helpers.test_clock", "status": "ready",
        "status_details": {},
    },
    "event": {
        "api_version": None, "created": 0, "data": None, "id": None, "livemode": False,
        "object": "event", "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None}, "type": None,
    },
    "webhook_endpoint": {
        "api_version": None, "application": None, "created": 0, "description": None,
        "enabled_events": [], "id": None, "livemode": False, "metadata": {},
        "object": "webhook_endpoint", "status": "enabled", "url": None,
    },
    "invoice": {
        "account_country": "US", "account_name": "Local Stripe emulator",
        "account_tax_ids": None, "amount_due": 0, "amount_overpaid": 0, "amount_paid": 0,
        "amount_remaining": 0, "amount_shipping": 0, "application": None,
        "attempt_count": 0, "attempted": False, "auto_advance": True,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None,
                          "provider": None, "status": None},
        "automatically_finalizes_at": None, "billing_reason": None,
        "collection_method": "charge_automatically", "created": 0, "currency": None,
        "custom_fields": None, "customer": None, "customer_account": None,
        "customer_address": None, "customer_email": None, "customer_name": None,
        "customer_phone": None, "customer_shipping": None, "customer_tax_exempt": "none",
        "customer_tax_ids": [], "default_payment_method": None, "default_source": None,
        "default_tax_rates": [], "description": None, "discounts": [], "due_date": None,
        "effective_at": None, "ending_balance": None, "footer": None, "from_invoice": None,
        "hosted_invoice_url": None, "id": None, "invoice_pdf": None,
        "issuer": {"type": "self"}, "last_finalization_error": None, "latest_revision": None,
        "lines": None, "livemode": False, "metadata": {}, "next_payment_attempt": None,
        "number": None, "object": "invoice", "on_behalf_of": None, "parent": None,
        "payment_settings": {"default_mandate": None, "payment_method_options": None,
                             "payment_method_types": None},
        "period_end": 0, "period_start": 0, "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0, "receipt_number": None,
        "rendering": {"amount_tax_display": None, "pdf": {"page_size": "auto"},
                      "template": None, "template_version": None},
        "shipping_cost": None, "shipping_details": None, "starting_balance": 0,
        "statement_descriptor": None, "status": "draft",
        "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None,
                               "paid_at": None, "voided_at": None},
        "subscription": None, "subtotal": 0, "subtotal_excluding_tax": 0, "test_clock": None,
        "total": 0, "total_discount_amounts": [], "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [], "total_taxes": [], "webhooks_delivered_at": None,
    },
    "line_item": {
        "amount": 0, "currency": None, "description": None, "discount_amounts": [],
        "discountable": True, "discounts": [], "id": None, "invoice": None,
        "livemode": False, "metadata": {}, "object": "line_item", "parent": None,
        "period": {"end": 0, "start": 0}, "pretax_credit_amounts": [], "pricing": None,
        "quantity": None, "quantity_decimal": None, "subscription": None, "subtotal": 0,
        "taxes": [],
    },
}


def template(name: str) -> dict:
    return copy.deepcopy(DEFAULTS[name])


def null_address() -> dict:
    return dict(_NULL_ADDRESS)
