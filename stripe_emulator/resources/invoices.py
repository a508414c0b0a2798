"""Invoices: /v1/invoices (retrieve, list, lines, finalize, pay, create_preview).

Invoices are made for subscriptions only (draft_for_subscription), all drafts
with `auto_advance: true` that finalize themselves one hour after they were
created (`automatically_finalizes_at`, Stripe's default grace period):

* `subscription_cycle`: a period (or a trial) ended, or a scheduled
  cancellation (`cancel_at`, `cancel_at_period_end`) was reached;
* `subscription_update`: `billing_cycle_anchor=now`, `trial_end=now`,
  `proration_behavior=always_invoice`, or a cancellation with `invoice_now`.

Lines (dahlia shape: `parent.subscription_item_details`, `pricing.price_details`):
metered items bill their un-invoiced usage, the meter's aggregation of that
customer's accepted events with `start <= timestamp < end` over the line's
`period`: from the item's period start (or from when its metered price was
added or replaced) up to the billed end; usage during a trial is not billed
(quantity 0). Licensed items bill the new period in advance, as Stripe does.
In flexible billing mode a removed or replaced metered price leaves a line
(`proration: true`, an `ii_` invoice_item id) for its usage up to the change,
put on the subscription's next invoice. While the invoice is a draft, metered
quantities are computed when it is read, so late events still count; at
finalization they are fixed.

Amounts: quantity x `unit_amount_decimal` in Decimal, rounded per line to a
whole minor unit with ROUND_HALF_UP (Stripe: "rounded to the nearest whole
cent"; its example 0.05 x 30 = 1.5 -> 2), then summed.

The preview (`POST /v1/invoices/create_preview` with `subscription`, and
`customer` if given) is the draft the billing cycle will make at the
subscription's next boundary (billing_cycle.upcoming_invoice: the same
builder, stored nowhere): metered quantities are the meter's usage stored
now, on the customer's time (its test clock's). Its id is `upcoming_in_...`,
its lines' `il_tmp_...`, as Stripe's; without a subscription that will be
invoiced the answer is Stripe's 404 `invoice_upcoming_none`.

Payments: there are no payment methods in the emulator, so a finalized
invoice stays `open` unless it is for 0 (Stripe marks those paid on
finalization) or `POST /pay` is called with `paid_out_of_band=true`.
"""

from __future__ import annotations

import copy
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from .. import aggregation, billing_cycle, errors, expand, fixtures, ids
from ..errors import InvalidRequest, StripeError
from ..listing import list_object, paginate, range_filter
from ..render import renderer
from ..routing import LIST_PARAMS, route
from ..store import format_decimal
from . import events
from .common import fetch, respond

GRACE_PERIOD = 3600  # draft -> finalized, when auto_advance is on
PENDING = "emulator.pending_line"  # internal: a line waiting for the next invoice
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx",
                "vnd", "vuv", "xaf", "xof", "xpf"}

for _field in ("customer", "test_clock", "default_payment_method", "default_source",
               "latest_revision", "on_behalf_of", "application", "discounts",
               "account_tax_ids", "parent.subscription_details.subscription"):
    expand.expandable("invoice", _field)
for _field in ("discounts", "subscription", "pricing.price_details.price"):
    expand.expandable("line_item", _field)


# --- lines and totals ------------------------------------------------------------------


def _price_for(store, line: dict) -> dict:
    return store.get(line["pricing"]["price_details"]["price"], "price")


def _is_metered(price: dict) -> bool:
    return (price.get("recurring") or {}).get("usage_type") == "metered"


def _set_quantity(store, line: dict, quantity: Decimal, price: dict) -> None:
    unit = Decimal(price["unit_amount_decimal"])
    amount = int((quantity * unit).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    line["quantity"] = int(quantity.to_integral_value(rounding=ROUND_DOWN))
    line["quantity_decimal"] = format_decimal(quantity)
    line["amount"] = line["subtotal"] = amount
    product = store.get(price["product"], "product") or {}
    line["description"] = (f"{format_decimal(quantity)} × {product.get('name') or price['product']}"
                           f" (at {_money(unit, price['currency'])} / "
                           f"{price['recurring']['interval']})")


def _money(minor: Decimal, currency: str) -> str:
    major = minor if currency in ZERO_DECIMAL else minor / 100
    text = format_decimal(major)
    if currency not in ZERO_DECIMAL and len(text.partition(".")[2]) < 2:
        text = format(major.quantize(Decimal("0.01")), "f")
    return f"{text} {currency.upper()}"


def _totals(invoice: dict) -> None:
    subtotal = sum(line["amount"] for line in invoice["lines"]["data"])
    invoice.update({"subtotal": subtotal, "subtotal_excluding_tax": subtotal, "total": subtotal,
                    "total_excluding_tax": subtotal, "amount_due": subtotal})
    invoice["amount_remaining"] = max(subtotal - invoice["amount_paid"], 0)


def refresh_metered(store, invoice: dict) -> dict:
    """Recompute metered lines from the meter events stored now."""
    for line in invoice["lines"]["data"]:
        price = _price_for(store, line)
        if not _is_metered(price) or line.get("_unbilled"):
            continue
        meter = store.get(price["recurring"]["meter"], "billing.meter")
        quantity = aggregation.for_meter(store, meter, invoice["customer"],
                                         line["period"]["start"], line["period"]["end"])
        _set_quantity(store, line, quantity, price)
    _totals(invoice)
    return invoice


def _line(store, invoice: dict, sub: dict, item_id: str, price: dict, period,
          quantity=None, proration: bool = False, line_prefix: str = "il") -> dict:
    line = fixtures.template("line_item")
    line.update({
        "id": ids.new_id(line_prefix), "currency": price["currency"], "invoice": invoice["id"],
        "livemode": invoice["livemode"], "metadata": dict(sub.get("metadata") or {}),
        "parent": {"type": "subscription_item_details", "invoice_item_details": None,
                   "subscription_item_details": {
                       "invoice_item": ids.new_id("ii") if proration else None,
                       "proration": proration,
                       "proration_details": {"credited_items": None},
                       "subscription": sub["id"], "subscription_item": item_id}},
        "period": {"start": period[0], "end": period[1]},
        "pricing": {"type": "price_details",
                    "price_details": {"price": price["id"], "product": price["product"]},
                    "unit_amount_decimal": price["unit_amount_decimal"]},
        "subscription": sub["id"],
    })
    _set_quantity(store, line, Decimal(quantity or 0), price)
    return line


def usage_window(sub: dict, item: dict, end: int):
    """[start, end) of an item's un-invoiced metered usage, and whether it is billed.

    Usage is billed from the item's period start, or from when its metered price
    was added or replaced mid-period (`_usage_start`). Usage during a trial is
    not billed (Stripe: "any usage accrued doesn't count toward the total").
    """
    start = item.get("_usage_start") or item["current_period_start"]
    trial_end = sub.get("trial_end")
    billed = True
    if trial_end is not None and start < trial_end:
        if end <= trial_end:
            billed = False
        else:
            start = trial_end
    return start, end, billed


def pending_lines(store, sub_id: str):
    return list(reversed(store.by_field(PENDING, "subscription", sub_id)))


def add_pending_line(ctx, sub: dict, item_id: str, price: dict, period) -> dict:
    """An invoice item (here: a line waiting for the subscription's next invoice)
    billing a removed or replaced metered price's usage (flexible billing mode)."""
    pending = {"id": ids.new_id("emupl"), "object": PENDING, "livemode": sub["livemode"],
               "created": period[1], "customer": sub["customer"], "subscription": sub["id"]}
    line = _line(ctx.store, {"id": None, "livemode": sub["livemode"]}, sub, item_id, price,
                 period, proration=True)
    pending["line"] = line
    ctx.store.insert(pending)
    return pending


def drop_pending_lines(store, sub_id: str) -> None:
    for pending in pending_lines(store, sub_id):
        store.delete(pending["id"])


def build_draft(store, sub: dict, items, *, created: int, billing_reason: str,
                closed_end=None, new_periods=None, period=None, invoice_id=None,
                line_prefix: str = "il"):
    """The draft invoice a subscription would get, or None if it would have no line.
    Nothing is written: `store_draft` keeps it (the billing cycle), the invoice
    preview (`billing_cycle.upcoming_invoice`) only shows it.

    * metered items bill their un-invoiced usage up to `closed_end` (if given);
    * licensed items bill `new_periods[item id]` in advance (if given);
    * the subscription's pending lines (flexible-mode usage of removed prices) are
      put on it.
    """
    customer = store.get(sub["customer"], "customer") or {}
    invoice = fixtures.template("invoice")
    inv_id = invoice_id or ids.new_id("in")
    invoice.update({"id": inv_id, "livemode": sub["livemode"]})
    lines = []
    for item in items:
        price = store.get(item["price"], "price")
        if _is_metered(price):
            if closed_end is None:
                continue
            start, end, billed = usage_window(sub, item, closed_end)
            if start >= end:
                continue
            line = _line(store, invoice, sub, item["id"], price, (start, end),
                         line_prefix=line_prefix)
            if not billed:
                line["_unbilled"] = True
        else:
            if new_periods is None:
                continue
            line = _line(store, invoice, sub, item["id"], price, new_periods[item["id"]],
                         quantity=item.get("quantity") or 0, line_prefix=line_prefix)
        lines.append(line)
    for pending in pending_lines(store, sub["id"]):
        line = copy.deepcopy(pending["line"])
        line["invoice"] = inv_id
        lines.append(line)
    if not lines:
        return None
    if period is None:
        period = (min(l["period"]["start"] for l in lines), max(l["period"]["end"] for l in lines))
    invoice.update({
        "created": created,
        "automatically_finalizes_at": created + GRACE_PERIOD,
        "billing_reason": billing_reason, "collection_method": sub["collection_method"],
        "currency": sub["currency"], "customer": sub["customer"],
        "customer_address": customer.get("address"), "customer_email": customer.get("email"),
        "customer_name": customer.get("name"), "customer_phone": customer.get("phone"),
        "customer_shipping": customer.get("shipping"),
        "customer_tax_exempt": customer.get("tax_exempt", "none"),
        "description": sub.get("description"),
        "parent": {"type": "subscription_details", "quote_details": None,
                   "subscription_details": {"metadata": dict(sub.get("metadata") or {}),
                                            "subscription": sub["id"]}},
        "period_start": period[0], "period_end": period[1], "test_clock": sub.get("test_clock"),
        "webhooks_delivered_at": None,
    })
    if sub["collection_method"] == "send_invoice":
        invoice["due_date"] = created + 86400 * int(sub.get("days_until_due") or 0)
    invoice["lines"] = list_object(f"/v1/invoices/{inv_id}/lines", lines)
    refresh_metered(store, invoice)
    return invoice


def store_draft(ctx, sub: dict, invoice: dict) -> dict:
    """Keep a `build_draft` invoice: the subscription's pending lines are now on it."""
    drop_pending_lines(ctx.store, sub["id"])
    ctx.store.insert(invoice)
    return invoice


def draft_for_subscription(ctx, sub: dict, items, **kwargs):
    """`build_draft`, stored."""
    invoice = build_draft(ctx.store, sub, items, **kwargs)
    return None if invoice is None else store_draft(ctx, sub, invoice)


# --- state changes ---------------------------------------------------------------------


def finalize(ctx, invoice: dict, at: int) -> dict:
    store = ctx.store
    refresh_metered(store, invoice)
    customer = store.get(invoice["customer"], "customer") or {}
    seq = int(customer.get("next_invoice_sequence") or 1)
    invoice["number"] = f"{customer.get('invoice_prefix') or 'EMU'}-{seq:04d}"
    if customer.get("invoice_prefix"):
        customer["next_invoice_sequence"] = seq + 1
        store.save(customer)
    invoice.update({"status": "open", "effective_at": at, "ending_balance": 0,
                    "automatically_finalizes_at": None})
    invoice["status_transitions"]["finalized_at"] = at
    store.save(invoice)
    events.emit(ctx, "invoice.finalized", invoice, created=at)
    if invoice["amount_due"] == 0:
        mark_paid(ctx, invoice, at)
    return invoice


def mark_paid(ctx, invoice: dict, at: int) -> dict:
    invoice.update({"status": "paid", "amount_paid": invoice["amount_due"],
                    "amount_remaining": 0, "attempted": True})
    invoice["status_transitions"]["paid_at"] = at
    ctx.store.save(invoice)
    events.emit(ctx, "invoice.paid", invoice, created=at)
    return invoice


@renderer("invoice")
def render_invoice(ctx, invoice: dict) -> dict:
    out = copy.deepcopy(invoice)
    if out["status"] == "draft":
        refresh_metered(ctx.store, out)
    for line in out["lines"]["data"]:
        for key in [k for k in line if k.startswith("_")]:
            del line[key]  # the emulator's own bookkeeping, not Stripe's shape
    return out


# --- endpoints ---------------------------------------------------------------------------


def _fetch_settled(ctx, obj_id: str) -> dict:
    invoice = fetch(ctx, obj_id, "invoice", "invoice")
    billing_cycle.settle_customer(ctx.store, invoice["customer"])
    return ctx.store.get(obj_id, "invoice")


@route("/v1/invoices/<obj_id>", ["GET"])
def retrieve(ctx, obj_id):
    return respond(ctx, _fetch_settled(ctx, obj_id))


@route("/v1/invoices", ["GET"], LIST_PARAMS + ("collection_method", "created", "customer",
                                               "customer_account", "due_date", "status",
                                               "subscription"))
def list_invoices(ctx):
    customer = ctx.str("customer")
    subscription = ctx.str("subscription")
    status = ctx.str("status", choices=("draft", "open", "paid", "uncollectible", "void"))
    collection = ctx.str("collection_method", choices=("charge_automatically", "send_invoice"))
    created = range_filter(ctx, "created")
    due = range_filter(ctx, "due_date")
    if customer:
        billing_cycle.settle_customer(ctx.store, customer)
    else:
        billing_cycle.settle_all(ctx.store)

    def keep(i):
        sub = ((i.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        return ((customer is None or i["customer"] == customer)
                and (subscription is None or sub == subscription)
                and (status is None or i["status"] == status)
                and (collection is None or i["collection_method"] == collection)
                and (created is None or created(i["created"]))
                and (due is None or due(i["due_date"])))

    return paginate(ctx, ctx.store.all("invoice", ctx.livemode, where=keep), "/v1/invoices",
                    "invoice", render=lambda o: respond(ctx, o))


@route("/v1/invoices/<obj_id>/lines", ["GET"], LIST_PARAMS)
def list_lines(ctx, obj_id):
    invoice = respond(ctx, _fetch_settled(ctx, obj_id))
    lines = list(invoice["lines"]["data"])
    # paginate() expects newest first; lines read in invoice order.
    return paginate(ctx, lines, f"/v1/invoices/{obj_id}/lines", "invoice line item")


PREVIEW_PARAMS = ("automatic_tax", "currency", "customer", "customer_account",
                  "customer_details", "discounts", "invoice_items", "issuer", "on_behalf_of",
                  "preview_mode", "schedule", "schedule_details", "subscription",
                  "subscription_details")
# What would change the previewed invoice: refused rather than ignored, so a
# preview never answers for a request it did not honour.
PREVIEW_UNSUPPORTED = ("customer_account", "customer_details", "discounts", "invoice_items",
                       "schedule", "schedule_details", "subscription_details")


def _no_upcoming(customer_id: str) -> StripeError:
    return InvalidRequest(f"No upcoming invoices for customer: {customer_id}",
                          code="invoice_upcoming_none", status=404)


@route("/v1/invoices/create_preview", ["POST"], PREVIEW_PARAMS)
def create_preview(ctx):
    for name in PREVIEW_UNSUPPORTED:
        if ctx.has(name):
            raise InvalidRequest(f"{name} is not supported by the local Stripe emulator's "
                                 "invoice preview.", param=name)
    customer_id = ctx.str("customer")
    sub_id = ctx.str("subscription")
    if customer_id is not None:
        fetch(ctx, customer_id, "customer", "customer", param="customer")
    if sub_id is None:
        if customer_id is None:
            raise errors.missing_param("customer")
        # Basil: a customer alone previews its pending invoice items, of which the
        # emulator has none outside subscriptions.
        raise _no_upcoming(customer_id)
    sub = fetch(ctx, sub_id, "subscription", "subscription", param="subscription")
    if customer_id not in (None, sub["customer"]):
        raise InvalidRequest(f"The subscription {sub_id} does not belong to customer "
                             f"{customer_id}.", param="subscription")
    customer_id = sub["customer"]
    billing_cycle.settle_customer(ctx.store, customer_id)
    invoice = billing_cycle.upcoming_invoice(
        ctx.store, ctx.store.get(sub_id, "subscription"),
        invoice_id="upcoming_" + ids.new_id("in"), line_prefix="il_tmp")
    if invoice is None:
        raise _no_upcoming(customer_id)
    return respond(ctx, invoice)


@route("/v1/invoices/<obj_id>/finalize", ["POST"], ("auto_advance",))
def finalize_endpoint(ctx, obj_id):
    invoice = _fetch_settled(ctx, obj_id)
    if invoice["status"] != "draft":
        raise InvalidRequest("This invoice is already finalized, you can't re-finalize a "
                             "non-draft invoice.", code="invoice_not_editable")
    if ctx.has("auto_advance"):
        invoice["auto_advance"] = bool(ctx.bool("auto_advance"))
    return respond(ctx, finalize(ctx, invoice, billing_cycle.customer_now(
        ctx.store, invoice["customer"])))


@route("/v1/invoices/<obj_id>/pay", ["POST"], ("forgive", "mandate", "off_session",
                                               "paid_out_of_band", "payment_method", "source"))
def pay(ctx, obj_id):
    invoice = _fetch_settled(ctx, obj_id)
    at = billing_cycle.customer_now(ctx.store, invoice["customer"])
    if invoice["status"] == "paid":
        raise InvalidRequest("Invoice is already paid", code="invoice_already_paid")
    if invoice["status"] in ("void", "uncollectible"):
        raise InvalidRequest(f"You cannot pay an invoice with status {invoice['status']}.",
                             code="invoice_not_editable")
    if not ctx.bool("paid_out_of_band"):
        raise InvalidRequest(
            "This customer has no attached payment source or default payment method. The "
            "local Stripe emulator has no payment methods: pay with paid_out_of_band=true.",
            code="invoice_no_payment_method_types")
    for name in ("forgive", "mandate", "off_session", "payment_method", "source"):
        ctx.raw(name)
    if invoice["status"] == "draft":
        invoice = finalize(ctx, invoice, at)
        if invoice["status"] == "paid":
            return respond(ctx, invoice)
    return respond(ctx, mark_paid(ctx, invoice, at))
