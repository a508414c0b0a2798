"""
dj-stripe's mirror written a page at a time: the rows `sync_from_stripe_data` would
write for a page of Stripe customers or subscriptions (with their items), in a few
statements per page instead of ~20 queries per object.

Invariant: the mirror is identical to dj-stripe's own sync (tests/test_sync_stripe.py
compares every column). Each row is built by the same rules as dj-stripe's
`_stripe_object_to_record` (the model's fields, `stripe_to_db`, "" for a missing text,
the owner account), with foreign keys looked up for the whole page in one query per
model rather than one per object. Whatever the bulk path does not write itself (a
customer's sources, discount or subscriber; tax rates; more items than the list
embeds; an object referring to one not mirrored yet) goes through dj-stripe's
per-object sync, which may ask Stripe for what is missing. Nothing else calls Stripe:
the list pages already hold every field written here.
"""

import json
from collections.abc import Callable, Iterable, Sequence

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone
from djstripe import models as djstripe_models
from djstripe.models.base import StripeModel
from djstripe.settings import djstripe_settings
from djstripe.utils import get_id_from_stripe_data

# As dj-stripe's _stripe_object_to_record: never written from Stripe's data.
IGNORED_FIELDS = ("date_purged", "subscriber", "stripe_data")
UPDATE_CHUNK = 500  # rows per UPDATE statement
STAMP = "djstripe_updated"  # when dj-stripe last saved the row (auto_now)


class NotMirrored(Exception):
    """An object refers to one the mirror does not hold yet: dj-stripe syncs it instead."""


def plain(stripe_object) -> dict:
    """A StripeObject as the plain dict dj-stripe stores in `stripe_data`."""
    return json.loads(str(stripe_object)) if hasattr(stripe_object, "to_dict") else stripe_object


def with_data(page) -> list[tuple]:
    """
    (object, plain dict) for each object of a list page. The dicts are the page's JSON as
    Stripe sent it (the response stripe-python parsed), equal to what `plain` makes of
    each object without serializing every object again; `plain` when there is no response.
    A raw page (the parsed JSON of a list, stripe_sync.list_raw_pages) gives each dict as
    both: its `sync_one` makes the Stripe object of what it gets.
    """
    if isinstance(page, dict) and page.get("object") == "list":
        return [(data, data) for data in page["data"]]
    objects = list(page)
    response = getattr(page, "last_response", None)
    raw = (response.data or {}).get("data") if response is not None else None
    if raw is None or [d.get("id") for d in raw] != [o.id for o in objects]:
        return [(o, plain(o)) for o in objects]
    return list(zip(objects, raw))


def _foreign_keys(model) -> list[models.ForeignKey]:
    return [
        f for f in model._meta.concrete_fields
        if isinstance(f, models.ForeignKey) and not f.name.startswith("djstripe_")
        and f.name not in IGNORED_FIELDS and issubclass(f.related_model, StripeModel)
    ]


def _written_fields(model) -> list[models.Field]:
    return [
        f for f in model._meta.concrete_fields
        if not f.name.startswith("djstripe_") and f.name not in IGNORED_FIELDS
    ]


class RunCache:
    """
    What every page of one sync refers to alike, read once per run instead of once per
    page: the owner account of the synced key (dj-stripe's lookup is a savepoint and
    three queries) and the few objects of SHARED models (an item's price). Rows of
    these are not written by the pages, so they cannot go stale within a run.
    """

    SHARED = (djstripe_models.Price,)

    def __init__(self):
        self.owners: dict = {}
        self.objects: dict[tuple[type, str], StripeModel] = {}


class Related:
    """Mirrored objects by (model, Stripe id): fetched for a whole page at once."""

    def __init__(self, cache: RunCache | None = None):
        self.objects: dict[tuple[type, str], StripeModel] = {}
        self.cache = cache

    def fetch(self, model, datas: Iterable[dict]) -> None:
        """Every object the foreign keys of `datas` (objects of `model`) refer to."""
        for field in _foreign_keys(model):
            target = field.related_model
            ids = {get_id_from_stripe_data(d[field.name]) for d in datas if d.get(field.name)}
            ids -= {i for (m, i) in self.objects if m is target}
            shared = self.cache is not None and target in RunCache.SHARED
            if shared:
                known = {i: self.cache.objects[(target, i)] for i in ids if (target, i) in self.cache.objects}
                self.add(known.values())
                ids -= set(known)
            if ids:
                found = list(target.stripe_objects.filter(id__in=ids))
                self.add(found)
                if shared:
                    self.cache.objects.update(((target, o.id), o) for o in found)

    def add(self, instances: Iterable[StripeModel]) -> None:
        for instance in instances:
            self.objects[(type(instance), instance.id)] = instance

    def get(self, model, stripe_id):
        try:
            return self.objects[(model, stripe_id)]
        except KeyError:
            raise NotMirrored(f"{model.__name__} {stripe_id}") from None


def record(model, data: dict, *, related: Related, owner) -> dict:
    """The field values dj-stripe's `_stripe_object_to_record` gives `data`."""
    manipulated = model._manipulate_stripe_object_hook(data)
    if not model.is_valid_object(manipulated):
        raise ValueError(f"Trying to fit {manipulated.get('object', '')!r} into {model.__name__!r}. Aborting.")
    result = {"stripe_data": data}
    for field in _written_fields(model):
        if isinstance(field, models.ForeignKey):
            if not issubclass(field.related_model, StripeModel) or field.name not in manipulated:
                continue
            raw = manipulated[field.name]
            result[field.name] = related.get(field.related_model, get_id_from_stripe_data(raw)) if raw else None
            continue
        value = field.stripe_to_db(manipulated) if hasattr(field, "stripe_to_db") else manipulated.get(field.name)
        if isinstance(field, (models.CharField, models.TextField)) and value is None:
            value = ""
        result[field.name] = value
    if owner:
        result["djstripe_owner_account"] = owner
    return result


def upsert(model, records: Sequence[dict]) -> list[StripeModel]:
    """Insert the new rows and update the mirrored ones, as dj-stripe's save would."""
    # Only the keys: every other column is written from Stripe's data.
    existing = model.stripe_objects.only("pk", "id").in_bulk([r["id"] for r in records], field_name="id")
    now = timezone.now()
    created, updated, names = [], [], set()
    for values in records:
        instance = existing.get(values["id"])
        if instance is None:
            created.append(model(**values))
            continue
        for name, value in values.items():
            setattr(instance, name, value)
        instance.djstripe_updated = now  # auto_now, which bulk_update does not apply
        names.update(values)
        updated.append(instance)
    insert_rows(model, created)
    if updated:
        update_rows(model, updated, [model._meta.get_field(n) for n in sorted((names - {"id"}) | {"djstripe_updated"})])
    return created + updated


def insert_rows(model, instances: Sequence) -> None:
    """
    INSERT new rows as `bulk_create` would (each field's `pre_save(add=True)`, so
    auto_now fields, then `get_db_prep_save`), in one `INSERT ... VALUES` per chunk with a
    parameter per value. Not `bulk_create` itself: on PostgreSQL Django 5.2 sends each
    column as one array (`UNNEST`), and psycopg escapes the `"` of every JSON document in
    such an array in Python, one callback per character: three quarters of the writing
    time of a page. The database's sequence gives the keys, set on `instances` as
    bulk_create sets them (RETURNING, in the rows' order).
    """
    if not instances:
        return
    quote = connection.ops.quote_name
    pk = model._meta.pk
    fields = [f for f in model._meta.concrete_fields if f is not pk and not f.generated]
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    columns = ", ".join(quote(f.column) for f in fields)
    per_statement = min(UPDATE_CHUNK, (connection.features.max_query_params or 65535) // len(fields))
    for instance in instances:
        instance._prepare_related_fields_for_save(operation_name="bulk_create")
    for start in range(0, len(instances), per_statement):
        chunk = instances[start : start + per_statement]
        params = [f.get_db_prep_save(f.pre_save(instance, True), connection) for instance in chunk for f in fields]
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES {', '.join([row] * len(chunk))} "
                f"RETURNING {quote(pk.column)}",
                params,
            )
            keys = cursor.fetchall()
        for instance, (key,) in zip(chunk, keys, strict=True):
            setattr(instance, pk.attname, key)
            instance._state.adding, instance._state.db = False, connection.alias


def update_rows(model, instances: Sequence, fields: Sequence[models.Field]) -> None:
    """
    Write `fields` of every instance in one `UPDATE ... FROM (VALUES ...)` per chunk,
    matched by Stripe id (Django's bulk_update builds a CASE per field and row: 60 ms an
    object at a page of 100). A row whose columns already hold every value is not
    rewritten (`IS DISTINCT FROM`: a resync of unchanged objects writes no new JSON,
    TOAST or index entries); it only gets its `djstripe_updated` (STAMP), as dj-stripe's
    save would give it, by a second, narrow UPDATE of the ids the first did not return.
    """
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    key = model._meta.get_field("id")
    compared = [f for f in fields if f.name != STAMP]
    stamp = [f for f in fields if f.name == STAMP]
    columns = [key, *compared, *stamp]
    if connection.vendor == "postgresql":
        row = "(" + ", ".join(f"%s::{f.db_type(connection)}" for f in columns) + ")"
        names = [quote(f"v{i}") for i in range(len(columns))]
        source = f"AS v ({', '.join(names)})"
        distinct = "IS DISTINCT FROM"
    else:  # SQLite names VALUES columns column1, column2, ...
        row = "(" + ", ".join("%s" for _ in columns) + ")"
        names = [f"column{i + 1}" for i in range(len(columns))]
        source = "AS v"
        distinct = "IS NOT"
    assignments = ", ".join(f"{quote(f.column)} = v.{n}" for f, n in zip(columns[1:], names[1:]))
    differs = (
        f"({', '.join(f'{table}.{quote(f.column)}' for f in compared)}) {distinct} "
        f"({', '.join(f'v.{n}' for n in names[1 : 1 + len(compared)])})"
    )
    for start in range(0, len(instances), UPDATE_CHUNK):
        chunk = instances[start : start + UPDATE_CHUNK]
        params = [
            f.get_db_prep_save(getattr(instance, f.attname), connection)
            for instance in chunk for f in columns
        ]
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM (VALUES {', '.join([row] * len(chunk))}) {source} "
                f"WHERE {table}.{quote(key.column)} = v.{names[0]}"
                + (f" AND {differs}" if compared else "")
                + f" RETURNING {table}.{quote(key.column)}",
                params,
            )
            changed = {stripe_id for (stripe_id,) in cursor.fetchall()}
        same = [instance for instance in chunk if instance.id not in changed]
        if same and stamp:  # the chunk's rows share one stamp (upsert's now)
            model._base_manager.filter(id__any_of=[instance.id for instance in same]).update(
                **{STAMP: getattr(same[0], STAMP)}
            )


def owner_account(model, data: dict, cache: RunCache | None = None):
    """dj-stripe's owner account of the objects synced with this key (one lookup per page,
    or per run with a RunCache: a plain dict's owner depends on the key alone)."""
    if cache is None or not isinstance(data, dict):
        return model._find_owner_account(data, api_key=settings.STRIPE_SECRET_KEY)
    key = settings.STRIPE_SECRET_KEY
    if key not in cache.owners:
        cache.owners[key] = model._find_owner_account(data, api_key=key)
    return cache.owners[key]


def mirror_customers(page, *, sync_one: Callable, cache: RunCache | None = None) -> list[str]:
    """A page of Stripe customers (a list page, or objects) mirrored; returns their ids.
    `cache`: what the pages of one run share (RunCache)."""
    pairs = with_data(page)
    bulk, one_by_one = [], []
    key = djstripe_settings.SUBSCRIBER_CUSTOMER_KEY
    for obj, data in pairs:
        needs_hooks = (
            data.get("discount")
            or (key and (data.get("metadata") or {}).get(key))
            or any(s.get("object") == "source" for s in (data.get("sources") or {}).get("data", []))
        )
        (one_by_one if needs_hooks else bulk).append((obj, data))
    model = djstripe_models.Customer
    with transaction.atomic():
        if bulk:
            related = Related(cache)
            related.fetch(model, [d for _, d in bulk])
            owner = owner_account(model, bulk[0][1], cache)
            records, rest = [], []
            for obj, data in bulk:
                try:
                    records.append(record(model, data, related=related, owner=owner))
                except NotMirrored:
                    rest.append((obj, data))
            upsert(model, records)
            one_by_one += rest
        for obj, _ in one_by_one:
            sync_one(obj)
    return [data["id"] for _, data in pairs]


def needs_dj_stripe(data: dict) -> bool:
    """What the bulk path does not write: tax rates, items beyond those the list embeds."""
    items = data.get("items") or {}
    return bool(
        data.get("default_tax_rates") or items.get("has_more")
        or any(i.get("tax_rates") for i in items.get("data", []))
    )


def mirror_subscriptions(page, *, sync_one: Callable, after: Callable, cache: RunCache | None = None) -> list[str]:
    """
    A page of Stripe subscriptions and their items mirrored; `after(data, before)` is
    called for each subscription written here, with its items as they were mirrored
    before (item id -> price id). Returns their ids. `cache`: what the pages of one run
    share (RunCache).
    """
    subscription_model, item_model = djstripe_models.Subscription, djstripe_models.SubscriptionItem
    pairs = with_data(page)
    one_by_one = [obj for obj, data in pairs if needs_dj_stripe(data)]
    bulk = [(obj, data) for obj, data in pairs if not needs_dj_stripe(data)]
    with transaction.atomic():
        if bulk:
            before: dict[str, dict[str, str]] = {data["id"]: {} for _, data in bulk}
            for sub_id, item_id, price_id in item_model.objects.filter(
                subscription__id__in=list(before)
            ).values_list("subscription_id", "id", "price__id"):
                before[sub_id][item_id] = price_id
            related = Related(cache)
            related.fetch(subscription_model, [data for _, data in bulk])
            related.fetch(item_model, [item for _, data in bulk for item in data["items"]["data"]])
            owner = owner_account(subscription_model, bulk[0][1], cache)
            records, written = [], []
            for obj, data in bulk:
                try:
                    records.append(record(subscription_model, data, related=related, owner=owner))
                    written.append((obj, data))
                except NotMirrored:  # e.g. a customer not mirrored yet: dj-stripe fetches it
                    one_by_one.append(obj)
            related.add(upsert(subscription_model, records))
            item_records, done = [], []
            for obj, data in written:
                try:
                    item_records += [
                        record(item_model, item, related=related, owner=owner) for item in data["items"]["data"]
                    ]
                    done.append(data)
                except NotMirrored:  # a price not mirrored yet: dj-stripe creates it
                    one_by_one.append(obj)
            mirrored_items = upsert(item_model, item_records)
            # dj-stripe sets each item's tax rates (none here): clear what an item had.
            item_model.tax_rates.through.objects.filter(
                subscriptionitem__in=[i.pk for i in mirrored_items]
            ).delete()
            for data in done:
                after(data, before[data["id"]])
        for obj in one_by_one:
            sync_one(obj)
    return [data["id"] for _, data in pairs]
