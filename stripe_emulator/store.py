"""State: a SQLite database (a file with `db_path`, else in memory).

Objects are JSON documents keyed by id, with their type, mode and creation
order (`seq`, which is also list order). Meter events live in their own
indexed table because there can be ~10^5 of them and they are aggregated, not
fetched one by one. Idempotency results and the clock state live here too, so
a restarted emulator answers retries and keeps its (shifted) time.

Concurrency: one connection guarded by one re-entrant lock. The pipeline runs
each handler inside `transaction()`, so every request's reads and writes are
atomic with respect to other requests (the meter-event identifier check
cannot race). Slow things (latency injection, network I/O) stay outside it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import sqlite3
import threading
from decimal import Decimal
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

from .clock import Clock

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL UNIQUE,
    type     TEXT NOT NULL,
    livemode INTEGER NOT NULL,
    created  INTEGER NOT NULL,
    data     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_by_type ON objects(type, livemode, seq);
-- Lookups by a parent's id (Store.by_field): a subscription's items, a customer's
-- subscriptions and invoices. Without them the billing cycle is quadratic.
CREATE INDEX IF NOT EXISTS objects_by_subscription ON objects(type, json_extract(data, '$.subscription'));
CREATE INDEX IF NOT EXISTS objects_by_customer ON objects(type, json_extract(data, '$.customer'));
CREATE INDEX IF NOT EXISTS objects_by_period_end ON objects(type, json_extract(data, '$.current_period_end'));

CREATE TABLE IF NOT EXISTS meter_events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    livemode      INTEGER NOT NULL,
    identifier    TEXT NOT NULL,
    event_name    TEXT NOT NULL,
    meter         TEXT,
    customer      TEXT,
    value         TEXT,
    timestamp     INTEGER NOT NULL,
    created       INTEGER NOT NULL,
    payload       TEXT NOT NULL,
    status        TEXT NOT NULL,
    error_code    TEXT,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS meter_events_identifier ON meter_events(livemode, identifier, created);
CREATE INDEX IF NOT EXISTS meter_events_aggregation ON meter_events(meter, customer, timestamp);
CREATE INDEX IF NOT EXISTS meter_events_name ON meter_events(event_name, seq);

CREATE TABLE IF NOT EXISTS idempotency (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    status      INTEGER NOT NULL,
    body        TEXT NOT NULL,
    headers     TEXT NOT NULL,
    created     INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Meter event statuses. `error` mirrors Stripe's asynchronous validation
# (accepted with 200, reported later); `canceled` is a meter event adjustment.
ACCEPTED, ERROR, CANCELED = "accepted", "error", "canceled"

EVENT_COLUMNS = (
    "seq, livemode, identifier, event_name, meter, customer, value, timestamp, "
    "created, payload, status, error_code, error_message"
)


class Store:
    def __init__(self, db_path: Optional[str] = None, clock: Optional[Clock] = None,
                 request_log_size: int = 10000):
        self.db_path = db_path
        self.clock = clock or Clock()
        self._lock = threading.RLock()
        self._depth = 0
        self._conn = sqlite3.connect(
            db_path or ":memory:", check_same_thread=False, isolation_level=None
        )
        self._conn.row_factory = sqlite3.Row
        if db_path:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # 64 MB of page cache, not SQLite's default 2 MB: 100,000 customers and
            # their subscriptions outgrow 2 MB, and then every lookup (a meter event
            # batch reads 100 customers) goes back to the file. (A memory map instead
            # of reads saved 30 % of the CPU of those first reads but put the file,
            # ~1 GB at 100,000 customers, into the process's RSS: not worth 7 %.)
            self._conn.execute("PRAGMA cache_size=-65536")
        self._conn.executescript(SCHEMA)
        self._requests: collections.deque = collections.deque(maxlen=request_log_size)
        self._requests_lock = threading.Lock()
        self._idempotency_writes = 0
        # Work that must only happen once a transaction is committed (webhook
        # deliveries of the events it created), and who wants to hear about it.
        self._after_commit: list = []
        self._listeners: list = []
        self._reset_hooks: list = []
        state = self._meta_get("clock")
        if state:
            self.clock.load_state(json.loads(state))

    # --- plumbing --------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator["Store"]:
        """Atomic and exclusive; nests (inner blocks join the outer one)."""
        pending: list = []
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._conn.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                if outer:
                    self._conn.execute("ROLLBACK")
                    self._after_commit.clear()
                raise
            else:
                self._depth -= 1
                if outer:
                    self._conn.execute("COMMIT")
                    pending, self._after_commit = self._after_commit, []
        # Outside the lock: listeners take their own locks.
        for fn in pending:
            fn()

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run `fn` when the current transaction commits (dropped on rollback)."""
        with self._lock:
            if self._depth:
                self._after_commit.append(fn)
                return
        fn()

    def subscribe(self, fn: Callable[[str, dict], None]) -> None:
        """`fn(kind, payload)` hears `publish` calls (e.g. kind "event")."""
        self._listeners.append(fn)

    def publish(self, kind: str, payload: dict) -> None:
        """Tell listeners after the current transaction commits."""
        self.after_commit(lambda: [fn(kind, payload) for fn in list(self._listeners)])

    def on_reset(self, fn: Callable[[], None]) -> None:
        self._reset_hooks.append(fn)

    def _exec(self, sql: str, args: Iterable = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, tuple(args))

    def _query(self, sql: str, args: Iterable = ()) -> List[sqlite3.Row]:
        # Rows are fetched under the lock: the connection is shared by all threads.
        with self._lock:
            return self._conn.execute(sql, tuple(args)).fetchall()

    def _query_one(self, sql: str, args: Iterable = ()) -> Optional[sqlite3.Row]:
        rows = self._query(sql, args)
        return rows[0] if rows else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _meta_get(self, key: str) -> Optional[str]:
        row = self._query_one("SELECT value FROM meta WHERE key = ?", (key,))
        return row["value"] if row else None

    def _meta_set(self, key: str, value: str) -> None:
        self._exec(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def meta_get(self, key: str) -> Optional[str]:
        """A small persistent value (kept with --db, cleared by reset)."""
        return self._meta_get(key)

    def meta_set(self, key: str, value: str) -> None:
        with self.transaction():
            self._meta_set(key, value)

    def reset(self) -> None:
        """Forget everything: objects, events, idempotency results, request log, time."""
        with self.transaction():
            for table in ("objects", "meter_events", "idempotency", "meta"):
                self._conn.execute(f"DELETE FROM {table}")
        self.clock.reset()
        with self._requests_lock:
            self._requests.clear()
        for fn in list(self._reset_hooks):
            fn()

    # --- time ------------------------------------------------------------

    def now(self) -> int:
        return self.clock.now()

    def _save_clock(self) -> None:
        with self.transaction():
            self._meta_set("clock", json.dumps(self.clock.state()))

    def set_time(self, ts: int, freeze: Optional[bool] = None) -> int:
        ts = self.clock.set(ts, freeze=freeze)
        self._save_clock()
        return ts

    def freeze_time(self, ts: Optional[int] = None) -> int:
        ts = self.clock.freeze(ts)
        self._save_clock()
        return ts

    def unfreeze_time(self) -> int:
        ts = self.clock.unfreeze()
        self._save_clock()
        return ts

    def advance_time(self, seconds: int) -> int:
        ts = self.clock.advance(seconds)
        self._save_clock()
        return ts

    def reset_time(self) -> int:
        self.clock.reset()
        self._save_clock()
        return self.now()

    # --- objects ---------------------------------------------------------

    def insert(self, obj: dict, type: Optional[str] = None) -> dict:
        self._exec(
            "INSERT INTO objects(id, type, livemode, created, data) VALUES (?, ?, ?, ?, ?)",
            (obj["id"], type or obj["object"], int(bool(obj.get("livemode"))),
             int(obj.get("created") or self.now()), json.dumps(obj)),
        )
        return obj

    def save(self, obj: dict) -> dict:
        self._exec("UPDATE objects SET data = ? WHERE id = ?", (json.dumps(obj), obj["id"]))
        return obj

    def delete(self, obj_id: str) -> None:
        self._exec("DELETE FROM objects WHERE id = ?", (obj_id,))

    def get(self, obj_id: str, type: Optional[str] = None) -> Optional[dict]:
        if type:
            row = self._query_one("SELECT data FROM objects WHERE id = ? AND type = ?",
                                  (obj_id, type))
        else:
            row = self._query_one("SELECT data FROM objects WHERE id = ?", (obj_id,))
        return json.loads(row["data"]) if row else None

    def fields_of(self, obj_ids: Iterable[str], type: str, fields: Tuple[str, ...]) -> dict:
        """{id: {field: value}} of top-level fields of those of `obj_ids` that exist with
        this type, read in SQL (no document parsed): one query per 500 ids (a meter
        event batch reads its customers at once). JSON true/false read as 1/0."""
        ids = list(dict.fromkeys(i for i in obj_ids if i))
        columns = ", ".join(f"json_extract(data, '$.{f}')" for f in fields)
        out = {}
        for chunk in _chunks(ids):
            rows = self._query(
                # `+type`: by the id index; with `type = ?` SQLite walks every object of
                # the type (10x slower for 100 ids among 10,000 customers).
                f"SELECT id, {columns} FROM objects WHERE +type = ? AND id IN ({_marks(chunk)})",
                (type, *chunk))
            out.update((r[0], dict(zip(fields, tuple(r)[1:]))) for r in rows)
        return out

    def all(self, type: str, livemode: Optional[bool] = None,
            where: Optional[Callable[[dict], bool]] = None) -> List[dict]:
        """Objects of a type, newest first (Stripe's list order)."""
        if livemode is None:
            rows = self._query("SELECT data FROM objects WHERE type = ? ORDER BY seq DESC", (type,))
        else:
            rows = self._query(
                "SELECT data FROM objects WHERE type = ? AND livemode = ? ORDER BY seq DESC",
                (type, int(livemode)),
            )
        out = [json.loads(r["data"]) for r in rows]
        return [o for o in out if where(o)] if where else out

    def page(self, type: str, livemode: Optional[bool], *, limit: int, after: Optional[str] = None,
             before: Optional[str] = None, where: Optional[Callable[[dict], bool]] = None,
             prepare: Optional[Callable[[dict], dict]] = None, chunk: int = 500) -> Optional[tuple]:
        """
        One page of a list, newest first, by cursor in SQL (`seq`): (objects, has_more),
        or None when the `after`/`before` object does not exist. Reads what the page needs
        (in chunks, the first of `limit + 1` rows, filtered by `where`), not every object of
        the type, so listing all of 100,000 objects costs 1,000 pages, not 1,000 full scans,
        and a page costs the same at any N. Each object read passes through `prepare`
        (object -> object as the list must show it) before `where`: the subscription list
        settles a due billing cycle there, for the objects it reads and no other.
        """
        newest_first = before is None
        bound = after if after is not None else before
        clauses, args = ["type = ?"], [type]
        if livemode is not None:
            clauses.append("livemode = ?")
            args.append(int(livemode))
        if bound is not None:
            row = self._query_one("SELECT seq FROM objects WHERE id = ?", (bound,))
            if row is None:
                return None
            clauses.append("seq < ?" if newest_first else "seq > ?")
            args.append(row["seq"])
        order = "DESC" if newest_first else "ASC"
        found, cursor_seq = [], None
        size = min(chunk, limit + 1)  # enough when nothing is filtered out; grows if not
        while len(found) <= limit:
            extra, extra_args = "", []
            if cursor_seq is not None:
                extra, extra_args = (" AND seq < ?" if newest_first else " AND seq > ?"), [cursor_seq]
            rows = self._query(
                f"SELECT seq, data FROM objects WHERE {' AND '.join(clauses)}{extra} ORDER BY seq {order} LIMIT ?",
                (*args, *extra_args, size),
            )
            for r in rows:
                if len(found) > limit:
                    break  # has_more is known: the rest of the chunk is not needed
                obj = json.loads(r["data"])
                if prepare is not None:
                    obj = prepare(obj)
                if where is None or where(obj):
                    found.append(obj)
            if len(rows) < size:
                break
            cursor_seq = rows[-1]["seq"]
            size = min(chunk, size * 2)
        has_more = len(found) > limit
        found = found[:limit]
        return (found, has_more) if newest_first else (list(reversed(found)), has_more)

    # Fields Store.by_field may look up; each has an expression index in SCHEMA.
    INDEXED_FIELDS = ("subscription", "customer")

    def by_field(self, type: str, field: str, value: str) -> List[dict]:
        """Objects of a type whose top-level `field` equals `value`, newest first."""
        if field not in self.INDEXED_FIELDS:
            raise ValueError(f"{field!r} has no index; add one to SCHEMA and INDEXED_FIELDS")
        rows = self._query(
            f"SELECT data FROM objects WHERE type = ? AND json_extract(data, '$.{field}') = ? ORDER BY seq DESC",
            (type, value),
        )
        return [json.loads(r["data"]) for r in rows]

    def customers_with_due_boundaries(self, now: int) -> List[str]:
        """
        Customers with a billing boundary at or before `now`: a period end, a due
        cancellation or a draft invoice to finalize. Found in SQL, so the scheduler's
        tick costs what is due, not what exists.
        """
        rows = self._query(
            """
            SELECT json_extract(sub.data, '$.customer') AS customer
              FROM objects AS item JOIN objects AS sub
                ON sub.type = 'subscription' AND sub.id = json_extract(item.data, '$.subscription')
             WHERE item.type = 'subscription_item'
               AND json_extract(item.data, '$.current_period_end') <= ?
               AND json_extract(sub.data, '$.status') NOT IN ('canceled', 'incomplete_expired')
            UNION
            SELECT json_extract(data, '$.customer') FROM objects
             WHERE type = 'subscription' AND json_extract(data, '$.cancel_at') <= ?
               AND json_extract(data, '$.status') NOT IN ('canceled', 'incomplete_expired')
            UNION
            SELECT json_extract(data, '$.customer') FROM objects
             WHERE type = 'invoice' AND json_extract(data, '$.status') = 'draft'
               AND json_extract(data, '$.automatically_finalizes_at') <= ?
            """,
            (now, now, now),
        )
        return sorted(r["customer"] for r in rows if r["customer"])

    def earliest_boundaries(self, customer_ids: Iterable[str]) -> dict:
        """{customer: the earliest time at which something of theirs falls due}: an
        open subscription's next boundary (its items' earliest `current_period_end`,
        or its `cancel_at` if earlier; none without items) or a draft invoice's
        `automatically_finalizes_at`; customers with none are absent. The same
        boundaries billing_cycle._next_due acts on (a superset: it also wants
        `auto_advance`), so a customer whose earliest time is after its `now` has
        nothing due: one query per 500 customers tells which of a meter event
        batch's customers need settling at all."""
        ids = list(dict.fromkeys(i for i in customer_ids if i))
        out: dict = {}
        for chunk in _chunks(ids):
            marks = _marks(chunk)
            rows = self._query(
                f"""
                SELECT customer, MIN(at) FROM (
                    SELECT sub.customer AS customer,
                           MIN(json_extract(item.data, '$.current_period_end'),
                               COALESCE(sub.cancel_at,
                                        json_extract(item.data, '$.current_period_end'))) AS at
                      -- Each subscription's fields read once (its document parsed once);
                      -- CROSS JOIN keeps this order (the customers' subscriptions, then
                      -- their items, both by index: `+` drops sub.id's TEXT affinity,
                      -- which would keep the expression index out), never all items first.
                      FROM (SELECT id, json_extract(data, '$.customer') AS customer,
                                   json_extract(data, '$.cancel_at') AS cancel_at,
                                   json_extract(data, '$.status') AS status
                              FROM objects
                             WHERE type = 'subscription'
                               AND json_extract(data, '$.customer') IN ({marks})) AS sub
                      CROSS JOIN objects AS item
                        ON item.type = 'subscription_item'
                       AND json_extract(item.data, '$.subscription') = +sub.id
                     WHERE sub.status NOT IN ('canceled', 'incomplete_expired')
                    UNION ALL
                    SELECT json_extract(data, '$.customer'),
                           json_extract(data, '$.automatically_finalizes_at')
                      FROM objects
                     WHERE type = 'invoice' AND json_extract(data, '$.customer') IN ({marks})
                       AND json_extract(data, '$.status') = 'draft'
                ) WHERE at IS NOT NULL GROUP BY customer
                """, (*chunk, *chunk))
            out.update((r[0], r[1]) for r in rows)
        return out

    def count(self, type: Optional[str] = None) -> int:
        if type:
            return self._query_one("SELECT COUNT(*) FROM objects WHERE type = ?", (type,))[0]
        return self._query_one("SELECT COUNT(*) FROM objects")[0]

    # --- meter events ----------------------------------------------------

    def add_meter_events(self, events: List[dict]) -> None:
        """Store meter events in order, in one executemany: dicts with the table's
        columns (livemode, identifier, event_name, meter, customer, value, timestamp,
        created, payload, status, error_code, error_message)."""
        with self._lock:
            self._conn.executemany(
                "INSERT INTO meter_events(livemode, identifier, event_name, meter, customer,"
                " value, timestamp, created, payload, status, error_code, error_message)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(int(e["livemode"]), e["identifier"], e["event_name"], e["meter"],
                  e["customer"], e["value"], e["timestamp"], e["created"],
                  json.dumps(e["payload"]), e["status"], e["error_code"], e["error_message"])
                 for e in events])

    def recent_meter_event(self, livemode: bool, identifier: str, after: int) -> Optional[dict]:
        """The latest event with this identifier created after `after`, if any."""
        row = self._query_one(
            f"SELECT {EVENT_COLUMNS} FROM meter_events"
            " WHERE livemode = ? AND identifier = ? AND created > ?"
            " ORDER BY seq DESC LIMIT 1",
            (int(livemode), identifier, after),
        )
        return _event_row(row) if row else None

    def recent_meter_identifiers(self, livemode: bool, identifiers: Iterable[str],
                                 after: int) -> set:
        """Those of `identifiers` used by an event created after `after` (the batch
        form of recent_meter_event's dedupe question: one query per 500)."""
        ids = list(dict.fromkeys(identifiers))
        found: set = set()
        for chunk in _chunks(ids):
            rows = self._query(
                "SELECT DISTINCT identifier FROM meter_events WHERE livemode = ?"
                f" AND identifier IN ({_marks(chunk)}) AND created > ?",
                (int(livemode), *chunk, after))
            found.update(r[0] for r in rows)
        return found

    def meter_events_after(self, seq: int, status: Optional[str] = None) -> List[dict]:
        """Stored meter events with `seq` greater than `seq`, in arrival order."""
        sql = f"SELECT {EVENT_COLUMNS} FROM meter_events WHERE seq > ?"
        args: list = [int(seq)]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        return [_event_row(r) for r in self._query(sql + " ORDER BY seq", args)]

    def meter_event_max_seq(self) -> int:
        row = self._query_one("SELECT MAX(seq) FROM meter_events")
        return int(row[0] or 0)

    def set_meter_event_status(self, seq: int, status: str) -> None:
        self._exec("UPDATE meter_events SET status = ? WHERE seq = ?", (status, seq))

    def meter_events(self, *, meter: Optional[str] = None, customer: Optional[str] = None,
                     event_name: Optional[str] = None, status: Optional[str] = None,
                     start: Optional[int] = None, end: Optional[int] = None,
                     livemode: Optional[bool] = None, identifier: Optional[str] = None,
                     limit: Optional[int] = None) -> List[dict]:
        """Stored meter events in arrival order; `start <= timestamp < end`."""
        return [_event_row(r) for r in self._select_events(
            EVENT_COLUMNS, meter=meter, customer=customer, event_name=event_name,
            status=status, start=start, end=end, livemode=livemode, identifier=identifier,
            limit=limit)]

    def _select_events(self, columns: str, *, meter=None, customer=None, event_name=None,
                       status=None, start=None, end=None, livemode=None, identifier=None,
                       limit=None) -> List[sqlite3.Row]:
        """`columns` of the meter events that match (None: any), in arrival order."""
        clauses, args = [], []
        for col, val in (("meter", meter), ("customer", customer), ("event_name", event_name),
                         ("status", status), ("identifier", identifier)):
            if val is not None:
                clauses.append(f"{col} = ?")
                args.append(val)
        if livemode is not None:
            clauses.append("livemode = ?")
            args.append(int(livemode))
        if start is not None:
            clauses.append("timestamp >= ?")
            args.append(int(start))
        if end is not None:
            clauses.append("timestamp < ?")
            args.append(int(end))
        sql = f"SELECT {columns} FROM meter_events"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._query(sql, args)

    def aggregation_rows(self, meter: str, customer: Optional[str], start: int,
                         end: int) -> List[Tuple[int, int, Optional[str], str]]:
        """(seq, timestamp, value, customer) of the accepted events a summary counts."""
        sql = ("SELECT seq, timestamp, value, customer FROM meter_events"
               " WHERE meter = ? AND status = ? AND timestamp >= ? AND timestamp < ?")
        args: list = [meter, ACCEPTED, int(start), int(end)]
        if customer is not None:
            sql += " AND customer = ?"
            args.append(customer)
        return [tuple(r) for r in self._query(sql + " ORDER BY timestamp, seq", args)]

    def meter_event_totals(self, meter: Optional[str] = None, customer: Optional[str] = None,
                           start: Optional[int] = None, end: Optional[int] = None) -> dict:
        """Exact sums of accepted event values (decimal strings), overall and per customer."""
        # Only the two columns a total needs (not whole events with their payloads):
        # the reporting benchmark reads this for 100,000 customers.
        rows = self._select_events("customer, value", meter=meter, customer=customer,
                                   start=start, end=end, status=ACCEPTED)
        total = Decimal(0)
        by_customer: dict = {}
        for cus, value in rows:
            v = Decimal(value) if value is not None else Decimal(0)
            total += v
            c = by_customer.get(cus)
            if c is None:
                c = by_customer[cus] = [Decimal(0), 0]
            c[0] += v
            c[1] += 1
        return {
            "meter": meter, "customer": customer, "start": start, "end": end,
            "total": format_decimal(total), "count": len(rows),
            "by_customer": {k: {"total": format_decimal(v[0]), "count": v[1]}
                            for k, v in by_customer.items()},
        }

    def meter_event_counts(self) -> dict:
        """How many meter events are stored, by status (accepted, error, canceled)."""
        rows = self._query("SELECT status, COUNT(*) AS n FROM meter_events GROUP BY status")
        out = {ACCEPTED: 0, ERROR: 0, CANCELED: 0}
        out.update({r["status"]: r["n"] for r in rows})
        out["total"] = sum(v for k, v in out.items())
        return out

    # --- idempotency -----------------------------------------------------

    def idempotent_result(self, scope: str, key: str, after: int) -> Optional[dict]:
        """The stored result for this key if it was saved after `after`."""
        row = self._query_one(
            "SELECT fingerprint, request_id, status, body, headers, created FROM idempotency"
            " WHERE scope = ? AND key = ? AND created > ?",
            (scope, key, after),
        )
        if not row:
            return None
        return {"fingerprint": row["fingerprint"], "request_id": row["request_id"],
                "status": row["status"], "body": row["body"],
                "headers": json.loads(row["headers"]), "created": row["created"]}

    def save_idempotent_result(self, scope: str, key: str, fingerprint: str, request_id: str,
                               status: int, body: str, headers: dict) -> None:
        with self.transaction():
            self._idempotency_writes += 1
            if self._idempotency_writes % 1000 == 0:
                # stripe-python sends a key with every POST: drop expired ones now and then.
                self._exec("DELETE FROM idempotency WHERE created <= ?", (self.now() - 86400,))
            self._exec(
                "INSERT OR REPLACE INTO idempotency(scope, key, fingerprint, request_id, status,"
                " body, headers, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (scope, key, fingerprint, request_id, status, body, json.dumps(headers),
                 self.now()),
            )

    # --- request log (memory only: it is a debugging aid, not state) -------

    def log_request(self, entry: dict) -> None:
        with self._requests_lock:
            self._requests.append(entry)

    def requests(self, method: Optional[str] = None, path: Optional[str] = None,
                 path_prefix: Optional[str] = None) -> List[dict]:
        with self._requests_lock:
            out = list(self._requests)
        if method:
            out = [r for r in out if r["method"] == method.upper()]
        if path:
            out = [r for r in out if r["path"] == path]
        if path_prefix:
            out = [r for r in out if r["path"].startswith(path_prefix)]
        return [_logged_request(r) for r in out]

    def request(self, request_id: str) -> Optional[dict]:
        with self._requests_lock:
            for r in self._requests:
                if r["id"] == request_id:
                    return _logged_request(r)
        return None


def _logged_request(entry: dict) -> dict:
    """A request log entry as read: a JSON body logged as its text (middleware.log)
    is parsed again into `body` and `params` (the query's params, then the body's)."""
    if "body_json" not in entry:
        return entry
    out: dict = {}
    for key, value in entry.items():
        if key == "body_json":
            body = json.loads(value)
            out["body"], out["params"] = body, {**entry["query"], **body}
        else:
            out[key] = value
    return out


def _event_row(row: sqlite3.Row) -> dict:
    return {
        "seq": row["seq"],
        "livemode": bool(row["livemode"]),
        "identifier": row["identifier"],
        "event_name": row["event_name"],
        "meter": row["meter"],
        "customer": row["customer"],
        "value": row["value"],
        "timestamp": row["timestamp"],
        "created": row["created"],
        "payload": json.loads(row["payload"]),
        "status": row["status"],
        "error_code": row["error_code"],
        "error_message": row["error_message"],
    }


def _chunks(items: list, size: int = 500) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _marks(items: list) -> str:
    return ", ".join("?" * len(items))


def format_decimal(d: Decimal) -> str:
    """Plain notation, no exponent, no trailing zeros: Decimal('25.500') -> '25.5'."""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s
