"""
Targets: what a reporting run owes Stripe, one per (meter, customer) billing period.

Stripe sums meter events per customer and meter, by timestamp, and bills every
subscription item of that customer on a price of that meter with the customer's total
over the item's period. So the unit of reporting is a billing period of the one item a
customer has on a meter, and these rules decide which periods a run reports:

- One item per customer and meter at a time. Two live items (two subscriptions, or two
  prices of one meter in one subscription) would each bill the same usage: nothing is
  sent for that customer and meter; the target carries a `conflict` saying which items
  and how to fix it, and the ledger records it as a failed report.
- An item's period runs from its Stripe period start (or the moment the item began,
  if later) to its period end (or the moment Stripe removed the item or the
  subscription ended, if earlier): usage from before the service began is never billed
  to it, and nothing after it ended.
- Cancelled and expired subscriptions stay targets until their final period is sent
  up to the end of service; so do removed items (the mirror records their removal,
  since dj-stripe keeps them).
- A ledger period that is not finished (not sent up to its end: its closing report
  failed, was skipped or never ran) is a target again on every run. A later period
  of the same customer and meter ends it where the later one begins (an anchor reset,
  a replacement), so consecutive periods tile time.
- A period already in the ledger keeps the window size and source meter its first
  report used: editing the meter changes the next period, never re-keys this one.
"""

import zlib
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from django.conf import settings
from django.db.models import BigIntegerField, CharField, Exists, F, Max, OuterRef, Q, TextField, Value
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, NullIf
from djstripe.models import Customer, Price, Subscription, SubscriptionItem

from ..conf import conf
from ..errors import BillingError
from ..models import Meter, SubscriptionItemChange, UsageReport
from . import invoices
from .meter_rules import problem_of_mirrored_meter
from .periods import STRIPE_TIMESTAMP_MAX_AGE, AlignedPeriod

Status = UsageReport.Status
# Subscriptions Stripe keeps invoicing (an unpaid one keeps drafting invoices too).
LIVE_SUBSCRIPTION_STATUSES = ("active", "trialing", "past_due", "unpaid")
# Subscriptions whose service has ended: their final period is still owed.
ENDED_SUBSCRIPTION_STATUSES = ("canceled", "incomplete_expired")
# Counting toward "reported up to": what reached Stripe, or had nothing to send.
REPORTED = Q(status__in=(Status.SENT, Status.SKIPPED, Status.CARRIED))


class SubjectMappingError(BillingError):
    """A customer has no usage subject under the configured metadata key."""


@dataclass(frozen=True)
class ReportTarget:
    """One (meter, customer) billing period, and the item it is reported for."""

    customer_id: str
    subscription_id: str
    subscription_item_id: str
    price_id: str
    meter: Meter
    livemode: bool
    subject: str | None
    subject_error: str | None
    period: AlignedPeriod
    # A Stripe test clock the customer lives on: its time is the customer's "now".
    test_clock: str | None = None
    # The usage source's meter: the meter's, or the one this period's reports used.
    source_meter_slug: str = ""
    # Why nothing may be sent for this customer and meter (two live items), or None.
    conflict: str | None = None
    # Whether the item is still live; False for a final period (cancelled, removed).
    live: bool = True
    # Why this meter cannot be reported to (meter_rules), or None.
    meter_error: str | None = None
    # Stripe finalized the invoice of this (ended) period: late usage is carried on.
    invoice_final: bool = False
    # An ended period reported up to its end: only late usage can still change it.
    finished: bool = False

    @property
    def key(self) -> tuple:
        """The ledger period: (meter, customer, exact Stripe period start)."""
        return (self.meter.id, self.customer_id, self.period.billing_start)

    @property
    def error(self) -> str | None:
        return self.meter_error or self.conflict or self.subject_error


def subject_for(customer_id: str, metadata: dict | None) -> str:
    """The usage-source subject of a Stripe customer: its id, or a metadata value."""
    key = conf.SUBJECT_METADATA_KEY
    if not key:
        return customer_id
    subject = (metadata or {}).get(key)
    if not subject:
        raise SubjectMappingError(
            f"customer {customer_id} has no usage subject: its metadata has no {key!r} "
            "(set it in Stripe, or unset EPSILON_SUBJECT_METADATA_KEY to use customer ids)"
        )
    return subject


@dataclass(frozen=True)
class ItemRow:
    """
    What reporting reads of a mirrored subscription item, its subscription, price and
    customer: a few fields of their `stripe_data`, selected in SQL, never the whole
    documents (a run over 100,000 items would otherwise parse 400,000 of them).
    """

    id: str
    price_id: str
    meter_id: str | None
    usage_type: str | None
    current_period_start: int
    current_period_end: int
    created: int | None
    subscription_id: str
    status: str
    start_date: int | None
    ended_at: int | None
    canceled_at: int | None
    trial_end: int | None
    customer_id: str
    subject_metadata: str | None  # the customer's metadata value under SUBJECT_METADATA_KEY
    test_clock: str | None


# ItemRow's fields: each a path into a mirrored object's stripe_data, read as text or
# as an integer in SQL (no JSON decoding per value in Python).
_ITEM_FIELDS = {
    "meter_id": (str, "price", "recurring", "meter"),
    "usage_type": (str, "price", "recurring", "usage_type"),
    "current_period_start": (int, "", "current_period_start"),
    "current_period_end": (int, "", "current_period_end"),
    "created": (int, "", "created"),
    "status": (str, "subscription", "status"),
    "start_date": (int, "subscription", "start_date"),
    "ended_at": (int, "subscription", "ended_at"),
    "canceled_at": (int, "subscription", "canceled_at"),
    "trial_end": (int, "subscription", "trial_end"),
    "test_clock": (str, "subscription__customer", "test_clock"),
}


def _json_path(kind: type, relation: str, *keys: str, null_as_text: bool = False):
    expression = f"{relation}__stripe_data" if relation else "stripe_data"
    for key in keys[:-1]:
        expression = KeyTransform(key, expression)
    text = KeyTextTransform(keys[-1], expression)
    if not null_as_text:
        # On SQLite Django reads a JSON null as the text 'null' (a customer with no test
        # clock had the clock 'null', which each run then asked Stripe for). Stripe's ids,
        # statuses and times are never the string "null"; a metadata value may be, and
        # Stripe never holds a JSON null there (null_as_text).
        text = NullIf(text, Value("null"), output_field=TextField())
    return Cast(text, BigIntegerField()) if kind is int else text


def _metered_items(*, customer_ids=None, item_ids=None):
    """
    The items to read: of these customers (or items), or on a metered price of a known
    meter. For a batch of customers, their subscriptions are read first and the items by
    their subscription (an index), the price checked on each row (ItemRow.on_meter): as
    one join the planner walks every item of the price for each batch.
    """
    items = SubscriptionItem.objects.all()
    if customer_ids is not None:
        subscriptions = Subscription.objects.filter(
            customer__id__any_of=customer_ids,
            stripe_data__status__in=LIVE_SUBSCRIPTION_STATUSES + ENDED_SUBSCRIPTION_STATUSES,
        ).values_list("id", flat=True)
        items = items.filter(subscription__id__any_of=list(subscriptions))
    elif item_ids is not None:
        items = items.filter(id__in=item_ids, subscription__stripe_data__status__in=LIVE_SUBSCRIPTION_STATUSES + ENDED_SUBSCRIPTION_STATUSES)
    else:
        items = items.filter(
            subscription__stripe_data__status__in=LIVE_SUBSCRIPTION_STATUSES + ENDED_SUBSCRIPTION_STATUSES,
            price__stripe_data__recurring__usage_type="metered",
            price__stripe_data__recurring__meter__in=list(_known_meter_ids()),
        )
    return items


def _known_meter_ids() -> set[str]:
    return set(Meter.objects.filter(livemode=settings.STRIPE_LIVE_MODE).values_list("id", flat=True))


def metered_items(*, customer_ids=None, item_ids=None) -> list[ItemRow]:
    """Items on a metered price of a meter Epsilon knows, live or recently ended."""
    items = _metered_items(customer_ids=customer_ids, item_ids=item_ids).order_by("subscription__customer__id", "id")
    # Aliased ("j_..."): some names are also the model's own fields.
    fields = {f"j_{name}": _json_path(*path) for name, path in _ITEM_FIELDS.items()}
    key = conf.SUBJECT_METADATA_KEY
    fields["j_subject_metadata"] = (
        _json_path(str, "subscription__customer", "metadata", key, null_as_text=True) if key
        else Value(None, output_field=CharField())
    )
    rows = items.values("id", "subscription_id", j_price_id=F("price__id"), j_customer_id=F("subscription__customer__id"), **fields)
    meters = _known_meter_ids()
    found = (ItemRow(**{name.removeprefix("j_"): value for name, value in row.items()}) for row in rows)
    return [item for item in found if item.usage_type == "metered" and item.meter_id in meters]


def current_targets(*, customer_ids=None, subscription_ids=None, now=None) -> list[ReportTarget]:
    """
    Every period owed for these customers (all when None; a subscription's customer when
    subscriptions are given, since the ledger counts by customer): each item's current
    period, final periods of ended service, and unfinished ledger periods.
    """
    now = now or datetime.now(UTC)
    if subscription_ids is not None:
        customer_ids = customers_of(subscription_ids, customer_ids)
    items = metered_items(customer_ids=customer_ids)
    changes, meters = _changes(items), _meters()
    mirrored = [
        target for item in items for target in _item_targets(item, changes[item.id], meters)
        if target.live or target.period.billing_end > now - STRIPE_TIMESTAMP_MAX_AGE
    ]
    mirrored = _flag_conflicts(mirrored)
    ledger = _ledger_periods(customer_ids=customer_ids, since=now - STRIPE_TIMESTAMP_MAX_AGE)
    return _unfinished(with_invoice_state(_merge(mirrored + ledger)), now=now)


@dataclass(frozen=True)
class Shard:
    """
    One of `count` disjoint parts of the customers (by a stable hash of the id): a run
    can be shared by several workers, each reporting the customers of its shard. The
    ledger counts by customer, so no period is ever in two shards.
    """

    index: int
    count: int

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise BillingError(f"shard {self.index} of {self.count} does not exist: use 0 to {self.count - 1}")

    def index_of(self, customer_id: str) -> int:
        """The shard of `count` a customer is in."""
        return zlib.crc32(customer_id.encode()) % self.count

    def holds(self, customer_id: str) -> bool:
        return self.index_of(customer_id) == self.index


def customers_to_report(*, customer_ids=None, shard: Shard | None = None, now=None) -> list[str]:
    """
    Every customer a run may owe a report for (with a metered item, or a ledger period
    still in Stripe's reach), sorted, of one shard when given: a run reads its targets
    a batch of these customers at a time, so its memory does not grow with their number.
    """
    now = now or datetime.now(UTC)
    with_items = _metered_items(customer_ids=customer_ids).values_list("subscription__customer__id", flat=True)
    in_ledger = UsageReport.objects.filter(
        period_end__gt=now - STRIPE_TIMESTAMP_MAX_AGE, meter__livemode=settings.STRIPE_LIVE_MODE
    ).exclude(trigger=UsageReport.Trigger.RECONCILE)
    if customer_ids is not None:
        in_ledger = in_ledger.filter(customer_id__any_of=customer_ids)
    customers = set(with_items.distinct().order_by()) | set(in_ledger.values_list("customer_id", flat=True).distinct().order_by())
    return sorted(c for c in customers if shard is None or shard.holds(c))


def customers_of(subscription_ids, customer_ids=None) -> list[str]:
    """The customers of these subscriptions (and those given): the ledger counts by customer."""
    owners = Subscription.objects.filter(id__in=subscription_ids).values_list("customer__id", flat=True)
    return sorted(set(owners) | set(customer_ids or []))


def closed_period_targets(closed, *, now=None) -> list[ReportTarget]:
    """
    Targets for the periods a webhook says have just closed, as (subscription item id,
    period start, period end), with everything else owed by those customers.
    """
    periods = {item_id: (start, end) for item_id, start, end in closed}
    items = metered_items(item_ids=list(periods))
    changes, meters = _changes(items), _meters()
    explicit = [
        replace(target, live=False)
        for item in items for target in _item_targets(item, changes[item.id], meters, period=periods[item.id])
    ]
    customers = sorted({t.customer_id for t in explicit})
    if not customers:
        return []
    owed = current_targets(customer_ids=customers, now=now or datetime.now(UTC))
    # The mirror's view of a period wins; the webhook's adds periods it no longer shows.
    known = {t.key for t in owed}
    unseen = [t for t in explicit if t.key not in known]
    checked = _flag_conflicts(unseen + [t for t in owed if t.live])
    return _unfinished(with_invoice_state(_merge(owed + [t for t in checked if not t.live])), now=now or datetime.now(UTC))


def _changes(items) -> dict[str, list[SubscriptionItemChange]]:
    """Each item's recorded changes (removal, price replaced), oldest first."""
    changes = defaultdict(list)
    for change in SubscriptionItemChange.objects.filter(item_id__any_of=[item.id for item in items]).order_by("at"):
        changes[change.item_id].append(change)
    return changes


def _item_targets(item, changes, meters: dict[str, Meter], *, period=None) -> list[ReportTarget]:
    """
    The item's period (its current one, or `period`) as targets: cut where its price
    was replaced (each part at its own price) and where its service ended.
    """
    start, end = period or (_time(item.current_period_start), _time(item.current_period_end))
    began = _time(item.created or item.start_date or item.current_period_start)
    ended = next((c.at for c in changes if c.kind == SubscriptionItemChange.Kind.REMOVED), None)
    if item.status in ENDED_SUBSCRIPTION_STATUSES:
        ended_at = item.ended_at or item.canceled_at
        ended = min(filter(None, [ended, _time(ended_at) if ended_at else end]))
    first, stop = max(start, began), min(end, ended) if ended else end
    if stop <= first:
        return []  # it ended before this period began
    trial_end = _time(item.trial_end) if item.trial_end else None
    if trial_end is not None and stop <= trial_end:
        return []  # Stripe bills no usage of a trial: nothing to report for it
    cuts = [c for c in changes if c.kind == SubscriptionItemChange.Kind.PRICE and first < c.at < stop]
    bounds = [first] + [c.at for c in cuts] + [stop]
    prices = [c.old_price_id for c in cuts] + [item.price_id]
    targets = []
    for n, price_id in enumerate(prices):
        meter = meters.get(_price_meter(item, price_id))
        if meter is None:
            continue  # that price is not on a meter Epsilon reports
        last = n == len(prices) - 1
        aligned = AlignedPeriod.of(
            bounds[n], bounds[n + 1] if bounds[n + 1] < end else end, meter.window_size,
            # A trial's end starts paid service: usage before it is the trial's, never billed.
            service_starts=n > 0 or began >= start or bounds[n] == trial_end,
            service_ends=not last or ended is not None,
        )
        target = _target(item, meter, aligned, price_id=price_id, live=last and ended is None)
        targets.append(target)
    return targets


def _price_meter(item: ItemRow, price_id: str) -> str | None:
    if price_id == item.price_id:
        return item.meter_id
    data = Price.objects.filter(id=price_id).values_list("stripe_data", flat=True).first() or {}
    return (data.get("recurring") or {}).get("meter")


def _target(item: ItemRow, meter: Meter, period: AlignedPeriod, *, price_id: str, live: bool) -> ReportTarget:
    key = conf.SUBJECT_METADATA_KEY
    metadata = {key: item.subject_metadata} if key and item.subject_metadata else {}
    try:
        subject, subject_error = subject_for(item.customer_id, metadata), None
    except SubjectMappingError as exc:
        subject, subject_error = None, str(exc)
    return ReportTarget(
        customer_id=item.customer_id,
        subscription_id=item.subscription_id,
        subscription_item_id=item.id,
        price_id=price_id,
        meter=meter,
        livemode=meter.livemode,
        subject=subject,
        subject_error=subject_error,
        period=period,
        test_clock=item.test_clock,
        source_meter_slug=meter.source_meter_slug,
        live=live,
        meter_error=problem_of_mirrored_meter(meter),
    )


def _flag_conflicts(targets: list[ReportTarget]) -> list[ReportTarget]:
    """
    Two live items of one customer on one meter conflict, and so do two ended periods
    that overlap. An ended period overlapping a live item's is dropped: the live item
    bills that span.
    """
    by_pair = defaultdict(list)
    for target in targets:
        by_pair[(target.meter.id, target.customer_id)].append(target)
    kept = []
    for group in by_pair.values():
        live = [t for t in group if t.live]
        kept += _conflicted(live) if len(live) > 1 else live
        ended = [t for t in group if not t.live and not any(_overlap(t.period, o.period) for o in live)]
        for target in ended:
            clashing = [o for o in ended if o is not target and _overlap(target.period, o.period)]
            kept += _conflicted([target] + clashing)[:1] if clashing else [target]
    return kept


def _conflicted(targets: list[ReportTarget]) -> list[ReportTarget]:
    message = conflict_message(targets)
    return [replace(t, conflict=message) for t in targets]


def conflict_message(targets: list[ReportTarget]) -> str:
    items = ", ".join(f"{t.subscription_item_id} (subscription {t.subscription_id}, price {t.price_id})" for t in targets)
    first = targets[0]
    return (
        f"customer {first.customer_id} has {len(targets)} live subscription items on meter "
        f"{first.meter.id}: {items}. Stripe bills each of them the customer's whole usage, so "
        "nothing is reported for this customer and meter until only one is left: remove the "
        "extra item or cancel the extra subscription (without invoicing its metered usage). "
        "The usage is then reported in full, nothing lost."
    )


def _overlap(a: AlignedPeriod, b: AlignedPeriod) -> bool:
    return a.billing_start < b.billing_end and b.billing_start < a.billing_end


def _ledger_periods(*, customer_ids, since) -> list[ReportTarget]:
    """Every ledger period of these customers still in Stripe's reach, as a target of its last report."""
    rows = UsageReport.objects.filter(period_end__gt=since, meter__livemode=settings.STRIPE_LIVE_MODE).exclude(
        trigger=UsageReport.Trigger.RECONCILE
    )
    if customer_ids is not None:
        rows = rows.filter(customer_id__any_of=customer_ids)
    # Each period's latest report, by a correlated NOT EXISTS (one query, any number of periods).
    later = UsageReport.objects.filter(
        meter_id=OuterRef("meter_id"), customer_id=OuterRef("customer_id"),
        billing_start=OuterRef("billing_start"), sequence__gt=OuterRef("sequence"),
    ).exclude(trigger=UsageReport.Trigger.RECONCILE)
    reports = list(rows.filter(~Exists(later)).select_related("meter"))
    if not reports:
        return []
    customers = {report.customer_id for report in reports}
    subjects = _subjects(customers)
    clocks = dict(Customer.objects.filter(id__any_of=customers).values_list("id", "stripe_data__test_clock"))
    return [ledger_target(r, subjects.get(r.customer_id, (None, None)), clocks.get(r.customer_id)) for r in reports]


def with_invoice_state(targets: list[ReportTarget], *, ended: list[ReportTarget] | None = None) -> list[ReportTarget]:
    """
    Periods whose invoice Stripe has finalized are marked so (one query, for the
    customers of `ended`: by default the periods no longer live). A finalized line for
    an item's period is proof the period ended, whatever the mirror says of the item.
    """
    ended = [t for t in targets if not t.live] if ended is None else ended
    if not ended:
        return targets
    final = invoices.finalized_ends({t.customer_id for t in ended})
    return [
        replace(t, invoice_final=True) if (t.subscription_item_id, t.period.billing_end) in final else t
        for t in targets
    ]


def _unfinished(targets: list[ReportTarget], *, now) -> list[ReportTarget]:
    """
    Ended periods reported up to their end are marked `finished` (one query): the run
    still looks at them while their invoice may take late usage (`watching_late_usage`).
    """
    ended = [t for t in targets if not t.live]
    if not ended:
        return targets
    reported = dict(
        ((row["meter_id"], row["customer_id"], row["billing_start"]), row["until"])
        for row in UsageReport.objects.filter(
            REPORTED,
            customer_id__any_of={t.customer_id for t in ended}, billing_start__any_of={t.period.billing_start for t in ended},
        )
        .values("meter_id", "customer_id", "billing_start")
        .annotate(until=Max("usage_until"))
        .order_by()
    )
    return [
        t if t.live or (reported.get(t.key) or t.period.start) < t.period.end else replace(t, finished=True)
        for t in targets
    ]


def watching_late_usage(target: ReportTarget, now) -> bool:
    """Whether a run reports this target: any but a finished period past Stripe's longest grace."""
    return not target.finished or target.period.billing_end > now - invoices.MAX_GRACE


def ledger_target(report: UsageReport, subject=(None, None), test_clock=None) -> ReportTarget:
    """The target a ledger row was written for (to resend it, or to finish its period)."""
    period = AlignedPeriod.recorded(
        report.billing_start, report.billing_end, report.period_start, report.period_end, report.window_size
    )
    return ReportTarget(
        customer_id=report.customer_id,
        subscription_id=report.subscription_id,
        subscription_item_id=report.subscription_item_id,
        price_id=report.price_id,
        meter=report.meter,
        livemode=report.livemode,
        subject=subject[0],
        subject_error=subject[1],
        period=period,
        test_clock=test_clock,
        source_meter_slug=report.source_meter_slug,
        live=False,
        meter_error=problem_of_mirrored_meter(report.meter),
    )


def _subjects(customer_ids) -> dict[str, tuple[str | None, str | None]]:
    metadata = dict(Customer.objects.filter(id__any_of=customer_ids).values_list("id", "stripe_data__metadata"))
    subjects = {}
    for customer_id in customer_ids:
        try:
            subjects[customer_id] = (subject_for(customer_id, metadata.get(customer_id)), None)
        except SubjectMappingError as exc:
            subjects[customer_id] = (None, str(exc))
    return subjects


def _merge(targets: list[ReportTarget]) -> list[ReportTarget]:
    """
    One target per ledger period: the mirror's knowledge first, counted in the windows,
    from the source and from the start of the period's first report. Periods of one
    customer and meter tile time: each ends where the next begins, and a period that
    follows another begins where that one's counted usage ended (even when a window
    size edit between them would round their common bound differently). A ledger
    period beginning inside a live item's period is a remnant of a conflict (a second
    item's failed reports), not a period of its own: the live item bills that span.
    """
    by_key = {}
    for target in targets:
        by_key.setdefault(target.key, target)
    snapshots = _period_snapshots(by_key)
    by_pair = defaultdict(list)
    for key, target in by_key.items():
        if key in snapshots:
            window_size, source_slug, start = snapshots[key]
            period = replace(target.period.in_windows(window_size), start=start)
            target = replace(target, period=period, source_meter_slug=source_slug)
        by_pair[key[:2]].append(target)
    merged = []
    for group in by_pair.values():
        merged += _tiled(_without_remnants(group))
    return merged


def _without_remnants(group: list[ReportTarget]) -> list[ReportTarget]:
    live = [t for t in group if t.live]
    return [
        t for t in group
        if t.live or not any(o.period.billing_start < t.period.billing_start < o.period.billing_end for o in live)
    ]


def _tiled(group: list[ReportTarget]) -> list[ReportTarget]:
    group = _overlaps_dropped(sorted(group, key=lambda t: t.period.billing_start))
    tiled = []
    for target, following in zip(group, group[1:] + [None]):
        # Two live items in conflict do not end each other: neither is reported.
        if following is not None and following.period.billing_start < target.period.billing_end and not following.conflict:
            ended = target.period.ending(following.period.billing_start, service_ends=following.period.service_starts)
            target = replace(target, period=ended)
        previous = tiled[-1] if tiled else None
        if previous is not None and previous.period.billing_end == target.period.billing_start:
            start = min(previous.period.end, target.period.end)
            if start != target.period.start:  # counted from where the previous period's usage ended
                target = replace(target, period=replace(target.period, start=start))
        tiled.append(target)
    return tiled


def _overlaps_dropped(group: list[ReportTarget]) -> list[ReportTarget]:
    """
    An ended period of another item that begins inside an earlier item's period is
    dropped: the earlier item bills that span (what is left of a conflict). The same
    item's later period, or a live one, ends the earlier period instead.
    """
    kept = []
    for target in group:
        previous = kept[-1] if kept else None
        if (
            previous is not None and not target.live and not target.conflict and not previous.conflict
            and target.subscription_item_id != previous.subscription_item_id
            and target.period.billing_start < previous.period.billing_end
        ):
            continue
        kept.append(target)
    return kept


def _period_snapshots(by_key) -> dict[tuple, tuple[str, str, datetime]]:
    """(window size, source slug, start) of the first report of each period in the ledger."""
    if not by_key:
        return {}
    first = (
        UsageReport.objects.filter(
            customer_id__any_of={k[1] for k in by_key}, billing_start__any_of={k[2] for k in by_key}, sequence=1,
        )
        .values_list("meter_id", "customer_id", "billing_start", "window_size", "source_meter_slug", "period_start")
    )
    return {(m, c, b): (w, s, start) for m, c, b, w, s, start in first}


def _meters() -> dict[str, Meter]:
    return {m.id: m for m in Meter.objects.all()}


def _time(value: int) -> datetime:
    return datetime.fromtimestamp(int(value), tz=UTC)

