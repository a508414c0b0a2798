"""The control API under /_emulator/: not part of Stripe, no API key needed.

For tests, the demo and cross-process checks:

    GET  /_emulator/health
    POST /_emulator/reset                     forget all state, real time again
    GET  /_emulator/time                      {now, frozen, offset, real_now}
    POST /_emulator/time                      now=TS | advance=SECONDS | freeze=true|false | real=true
    GET  /_emulator/meter_events              ?customer=&meter=&event_name=&status=&identifier=
    GET  /_emulator/meter_event_totals        ?meter=&customer=&start=&end=  (exact decimal strings)
    GET  /_emulator/requests                  ?method=&path=&path_prefix=
    GET  /_emulator/requests/<request id>
    GET  /_emulator/objects                   ?type=   (raw stored documents)
    GET  /_emulator/objects/<id>
    GET  /_emulator/webhook_deliveries        ?event=&endpoint=&status=&type=  (attempts included)
    POST /_emulator/webhooks/flush            timeout=10, include_retries=true: block until
                                              no delivery is queued or running
    POST /_emulator/wait                      timeout=10: also wait for test clocks advancing
    POST /_emulator/billing/settle            run the billing cycle for the emulator clock now
    POST /_emulator/meter_events/validate     run meter event validation now: error reports
                                              (thin events) for errors stored since the last run
    GET/POST /_emulator/meter_events/validation  auto=true|false: validate on each scheduler tick
    GET  /_emulator/faults                    fault injection and limits: {config, initial}
    POST /_emulator/faults                    set options (FaultConfig fields, e.g. rate_429=0.2,
                                              paths=all); reset=true first restores the
                                              startup configuration
    GET  /_emulator/stats                     counters (reset=true: clear them)
    POST /_emulator/subscriptions/<id>/status status=past_due|unpaid|incomplete_expired|active
                                              (test-only: what failed payments would do;
                                              emits customer.subscription.updated)
    POST /_emulator/bulk_subscriptions        count=N price=PRICE_ID [email_prefix=bulk start=0
                                              email_domain=example.com metadata_n=false
                                              batch=200 stripe_version= ids=true]: N customers
                                              each subscribed to the price, made by the API's
                                              own handlers, `batch` per transaction (bulk.py)

Params come from the query string, a form body or a JSON body; answers are
compact JSON.
"""

from __future__ import annotations

import json

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import aggregation, forms, jsonutil
from .context import DEFAULT_API_VERSION
from .store import format_decimal

VERSION = "1"


class ControlError(Exception):
    def __init__(self, message: str, status: int = 400, body: dict = None):
        super().__init__(message)
        self.message, self.status, self.body = message, status, body


class ControlApi:
    def __init__(self, app):
        self.app = app
        self.store = app.store
        self.map = Map([
            Rule("/_emulator/health", methods=["GET"], endpoint="health"),
            Rule("/_emulator/reset", methods=["POST"], endpoint="reset"),
            Rule("/_emulator/time", methods=["GET"], endpoint="get_time"),
            Rule("/_emulator/time", methods=["POST"], endpoint="set_time"),
            Rule("/_emulator/meter_events", methods=["GET"], endpoint="meter_events"),
            Rule("/_emulator/meter_event_totals", methods=["GET"], endpoint="totals"),
            Rule("/_emulator/requests", methods=["GET"], endpoint="requests"),
            Rule("/_emulator/requests/<req_id>", methods=["GET"], endpoint="request"),
            Rule("/_emulator/objects", methods=["GET"], endpoint="objects"),
            Rule("/_emulator/objects/<obj_id>", methods=["GET"], endpoint="object"),
            Rule("/_emulator/webhook_deliveries", methods=["GET"], endpoint="deliveries"),
            Rule("/_emulator/webhooks/flush", methods=["POST"], endpoint="flush"),
            Rule("/_emulator/wait", methods=["POST"], endpoint="wait"),
            Rule("/_emulator/billing/settle", methods=["POST"], endpoint="settle"),
            Rule("/_emulator/meter_events/validate", methods=["POST"], endpoint="validate"),
            Rule("/_emulator/meter_events/validation", methods=["GET"],
                 endpoint="get_validation"),
            Rule("/_emulator/meter_events/validation", methods=["POST"],
                 endpoint="set_validation"),
            Rule("/_emulator/faults", methods=["GET"], endpoint="get_faults"),
            Rule("/_emulator/faults", methods=["POST"], endpoint="set_faults"),
            Rule("/_emulator/stats", methods=["GET"], endpoint="stats"),
            Rule("/_emulator/subscriptions/<sub_id>/status", methods=["POST"],
                 endpoint="subscription_status"),
            Rule("/_emulator/bulk_subscriptions", methods=["POST"], endpoint="bulk_subscriptions"),
        ])

    def handle(self, request: Request) -> Response:
        adapter = self.map.bind("localhost", path_info=request.path)
        try:
            endpoint, args = adapter.match(request.path, method=request.method)
            params = _params(request)
            body = getattr(self, "do_" + endpoint)(params, **args)
            status = 200
        except (NotFound, MethodNotAllowed):
            body, status = {"error": {"message": f"Unknown control endpoint "
                                                 f"({request.method}: {request.path})."}}, 404
        except ControlError as e:
            body, status = e.body or {"error": {"message": e.message}}, e.status
        # Compact (json's C encoder): answers like meter_event_totals for 100,000
        # customers are megabytes; indenting them took 5x as long. Same JSON.
        return Response(jsonutil.dumps(body, indent=None), status=status,
                        mimetype="application/json")

    # --- endpoints ---------------------------------------------------------

    def do_health(self, params):
        return {"status": "ok", "emulator": "stripe_emulator", "control_api_version": VERSION,
                "api_version": DEFAULT_API_VERSION, "account": self.app.account_id,
                "now": self.store.now(), "persistent": bool(self.store.db_path),
                "objects": self.store.count()}

    def do_reset(self, params):
        self.store.reset()
        self.app.faults.reset()
        return {"reset": True, "now": self.store.now()}

    def do_get_time(self, params):
        return self.store.clock.describe()

    def do_set_time(self, params):
        if _flag(params, "real"):
            self.store.reset_time()
        if "now" in params:
            freeze = _flag(params, "freeze") if "freeze" in params else None
            self.store.set_time(_int(params, "now"), freeze=freeze)
        elif "freeze" in params:
            if _flag(params, "freeze"):
                self.store.freeze_time()
            else:
                self.store.unfreeze_time()
        if "advance" in params:
            self.store.advance_time(_int(params, "advance"))
        return self.store.clock.describe()

    def do_meter_events(self, params):
        events = self.store.meter_events(
            meter=params.get("meter"), customer=params.get("customer"),
            event_name=params.get("event_name"), status=params.get("status"),
            identifier=params.get("identifier"),
            start=_int(params, "start") if "start" in params else None,
            end=_int(params, "end") if "end" in params else None)
        return {"object": "list", "data": events, "count": len(events)}

    def do_totals(self, params):
        start = _int(params, "start") if "start" in params else None
        end = _int(params, "end") if "end" in params else None
        meter_id, customer = params.get("meter"), params.get("customer")
        out = self.store.meter_event_totals(meter=meter_id, customer=customer, start=start,
                                            end=end)
        if meter_id:
            meter = self.store.get(meter_id, "billing.meter")
            if meter is None:
                raise ControlError(f"No such meter: {meter_id}", 404)
            # What an event summary over this range would say (formula-aware).
            out["formula"] = meter["default_aggregation"]["formula"]
            out["aggregated_value"] = format_decimal(aggregation.for_meter(
                self.store, meter, customer, start if start is not None else -2**62,
                end if end is not None else 2**62))
        return out

    def do_requests(self, params):
        data = self.store.requests(method=params.get("method"), path=params.get("path"),
                                   path_prefix=params.get("path_prefix"))
        return {"object": "list", "data": data, "count": len(data)}

    def do_request(self, params, req_id):
        entry = self.store.request(req_id)
        if entry is None:
            raise ControlError(f"No request {req_id} in the emulator's request log.", 404)
        return entry

    def do_objects(self, params):
        if not params.get("type"):
            raise ControlError("Pass type=, e.g. type=customer or type=billing.meter.")
        data = self.store.all(params["type"])
        return {"object": "list", "data": data, "count": len(data)}

    def do_object(self, params, obj_id):
        obj = self.store.get(obj_id)
        if obj is None:
            raise ControlError(f"No object {obj_id}.", 404)
        return obj


    def do_deliveries(self, params):
        data = self.app.webhooks.deliveries(event=params.get("event"),
                                            endpoint=params.get("endpoint"),
                                            status=params.get("status"),
                                            type=params.get("type"))
        return {"object": "list", "data": data, "count": len(data)}

    def do_flush(self, params):
        timeout = _float(params, "timeout", 10.0)
        retries = _flag(params, "include_retries") if "include_retries" in params else True
        done = self.app.webhooks.flush(timeout, include_retries=retries)
        return {"done": done, "pending": self.app.webhooks.pending()}

    def do_wait(self, params):
        done = self.app.wait_idle(_float(params, "timeout", 10.0))
        return {"done": done, "pending_webhooks": self.app.webhooks.pending()}

    def do_get_faults(self, params):
        return {"config": self.app.faults.config.as_dict(),
                "initial": self.app.faults.initial.as_dict()}

    def do_set_faults(self, params):
        from .faults import coerce_options

        params = dict(params)
        if _flag(params, "reset"):
            self.app.faults.reset()
        params.pop("reset", None)
        try:
            self.app.faults.set(**coerce_options(params))
        except (TypeError, ValueError) as e:
            raise ControlError(str(e))
        return self.do_get_faults({})

    def do_stats(self, params):
        out = self.app.faults.stats(self.store)
        if _flag(params, "reset"):
            self.app.faults.reset_stats()
        return out

    def do_subscription_status(self, params, sub_id):
        from .resources.subscriptions import force_status

        if not params.get("status"):
            raise ControlError("Pass status=past_due, unpaid, incomplete_expired or active.")
        try:
            return force_status(self.store, sub_id, params["status"])
        except LookupError as e:
            raise ControlError(str(e), 404)
        except ValueError as e:
            raise ControlError(str(e))

    def do_bulk_subscriptions(self, params):
        from . import bulk

        if not params.get("count") or not params.get("price"):
            raise ControlError("Pass count=N and price=PRICE_ID (a recurring price).")
        count, start, batch = _int(params, "count"), _int_or(params, "start", 0), \
            _int_or(params, "batch", bulk.DEFAULT_BATCH)
        if not 1 <= count <= bulk.MAX_COUNT:
            raise ControlError(f"count must be between 1 and {bulk.MAX_COUNT}.")
        if start < 0 or batch < 1:
            raise ControlError("start must be at least 0 and batch at least 1.")
        if self.store.get(params["price"], "price") is None:
            raise ControlError(f"No such price: {params['price']}", 404)
        try:
            made = bulk.bulk_subscriptions(
                self.app, count=count, price=params["price"],
                email_prefix=params.get("email_prefix", "bulk"),
                email_domain=params.get("email_domain", "example.com"), start=start,
                metadata_n=_flag(params, "metadata_n"), batch=batch,
                stripe_version=params.get("stripe_version") or None)
        except bulk.BulkError as e:
            made = _without_ids(e.made, params)
            raise ControlError(e.error.message, e.error.status, {
                "error": {"message": e.error.message, "type": e.error.type,
                          "code": e.error.code, "param": e.error.param}, "made": made})
        return _without_ids(made, params)

    def do_validate(self, params):
        from .resources import v2_events

        events = self.app.validate_meter_events()
        return {"object": "list", "data": [v2_events.render_event(e) for e in events],
                "count": len(events)}

    def do_get_validation(self, params):
        return {"auto": self.app.meter_validation_auto}

    def do_set_validation(self, params):
        if "auto" not in params:
            raise ControlError("Pass auto=true or auto=false.")
        self.app.meter_validation_auto = _flag(params, "auto")
        return self.do_get_validation({})

    def do_settle(self, params):
        from . import billing_cycle

        billing_cycle.settle_all(self.store)
        return {"settled": True, "now": self.store.now()}


def _float(params: dict, name: str, default: float) -> float:
    try:
        return float(params.get(name, default))
    except (TypeError, ValueError):
        raise ControlError(f"{name} must be a number, got {params[name]!r}.")


def _params(request: Request) -> dict:
    params = forms.decode(request.query_string.decode("utf-8", "replace"))
    raw = request.get_data(as_text=True)
    if raw:
        if (request.mimetype or "") == "application/json":
            try:
                body = json.loads(raw)
            except ValueError:
                raise ControlError("Invalid JSON body.")
            if not isinstance(body, dict):
                raise ControlError("The JSON body must be an object.")
            params.update({k: v if not isinstance(v, bool) else str(v).lower()
                           for k, v in body.items()})
        else:
            params.update(forms.decode(raw))
    return params


def _int(params: dict, name: str) -> int:
    try:
        return int(params[name])
    except (TypeError, ValueError):
        raise ControlError(f"{name} must be an integer, got {params[name]!r}.")


def _int_or(params: dict, name: str, default: int) -> int:
    return _int(params, name) if params.get(name) not in (None, "") else default


def _without_ids(made: dict, params: dict) -> dict:
    """`ids=false`: only the counts (a large run's ids are megabytes)."""
    if "ids" in params and not _flag(params, "ids"):
        return {k: v for k, v in made.items() if k not in ("customers", "subscriptions")}
    return made


def _flag(params: dict, name: str) -> bool:
    return str(params.get(name, "")).lower() in ("1", "true", "yes")
