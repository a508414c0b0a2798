"""The WSGI application: `/v1/...` through the middleware chain, `/_emulator/...`
to the control API."""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

from werkzeug.wrappers import Request, Response

from . import faults as fl, ids, jsonutil, middleware as mw
from .context import ApiResponse, Ctx
from .routing import ROUTES, Router
from .scheduler import Scheduler
from .store import Store
from .webhooks import DEFAULT_RETRY_DELAYS, WebhookDispatcher


def _load_resources() -> None:
    # Importing the modules registers their routes, renderers and expansions.
    from .resources import (  # noqa: F401
        accounts, customers, events, invoices, meter_event_stream, meter_events, meters,
        prices, products, subscriptions, test_clocks, v2_events, webhook_endpoints,
    )


class EmulatorApp:
    def __init__(self, store: Store, revoked_keys: Iterable[str] = (),
                 account_id: str = ids.ACCOUNT_ID, verbose: bool = False,
                 webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
                 webhook_timeout: float = 10.0, billing_tick: Optional[float] = 1.0,
                 faults: Optional[fl.FaultConfig] = None):
        _load_resources()
        from .control import ControlApi

        self.store = store
        self.webhooks = WebhookDispatcher(store, webhook_retry_delays, webhook_timeout)
        self.scheduler = Scheduler(store, billing_tick)
        # Meter error reports (resources/v2_events.py) on each scheduler tick while
        # on; tests turn it off and run validation themselves (validate_meter_events).
        self.meter_validation_auto = True
        self.scheduler.on_tick(self._auto_validate)
        self.account_id = account_id
        self.revoked_keys = set(revoked_keys)
        self.verbose = verbose
        # Fault injection and Stripe's limits (faults/): off unless configured.
        self.faults = fl.Faults(faults)
        self.router = Router(ROUTES)
        self.middlewares: List[Tuple[str, mw.Middleware]] = []
        self.reset_pipeline()
        self.control = ControlApi(self)

    def close(self) -> None:
        """Stop the background threads (the scheduler, webhook delivery)."""
        self.scheduler.stop()
        self.webhooks.stop()

    def _auto_validate(self) -> None:
        if self.meter_validation_auto:
            self.validate_meter_events()

    def validate_meter_events(self) -> list:
        """Run Stripe's asynchronous meter event validation now: error reports
        (thin events) for the meter event errors stored since the last run."""
        from .resources import v2_events

        return v2_events.run_validation(self.store)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Until queued test clock advances have run and all webhook deliveries
        (retries included) are done, or `timeout` seconds. True if idle."""
        import time

        deadline = time.monotonic() + timeout
        ok = self.scheduler.wait_idle(timeout)
        return self.webhooks.flush(max(deadline - time.monotonic(), 0)) and ok

    # --- pipeline configuration -------------------------------------------

    def reset_pipeline(self) -> None:
        """Back to the default chain (drops middlewares added with `use`)."""
        self.middlewares = [
            ("log", mw.log),
            ("fault_stats", fl.fault_stats),
            ("errors", mw.errors_to_json),
            ("params", mw.parse_params),
            ("auth", mw.authenticate),
            ("version", mw.version_and_account),
            ("fault_limits", fl.fault_limits),
            ("fault_inject", fl.fault_inject),
            ("idempotency", mw.Idempotency()),
            ("fault_after", fl.fault_after),
        ]

    def use(self, fn: mw.Middleware, name: Optional[str] = None,
            before: Optional[str] = None, after: Optional[str] = None) -> None:
        """Add a middleware: innermost by default, or next to a named one."""
        name = name or getattr(fn, "__name__", repr(fn))
        names = [n for n, _ in self.middlewares]
        if before is not None:
            idx = names.index(before)
        elif after is not None:
            idx = names.index(after) + 1
        else:
            idx = len(self.middlewares)
        self.middlewares.insert(idx, (name, fn))

    def remove(self, name: str) -> None:
        self.middlewares = [(n, f) for n, f in self.middlewares if n != name]

    # --- request handling ---------------------------------------------------

    def handle_api(self, request: Request) -> Response:
        ctx = Ctx(self, request, ids.request_id())
        chain = list(self.middlewares)

        def call(i: int) -> ApiResponse:
            if i == len(chain):
                return mw.dispatch(ctx)
            return chain[i][1](ctx, lambda: call(i + 1))

        return to_response(call(0))

    def wsgi_app(self, environ, start_response):
        request = Request(environ)
        if request.path == "/_emulator" or request.path.startswith("/_emulator/"):
            response = self.control.handle(request)
        else:
            response = self.handle_api(request)
        return response(environ, start_response)

    def __call__(self, environ, start_response):
        return self.wsgi_app(environ, start_response)


def to_response(resp: ApiResponse) -> Response:
    body = resp.body if isinstance(resp.body, str) else jsonutil.dumps(resp.body)
    out = Response(body, status=resp.status)
    out.headers["Content-Type"] = "application/json"
    for k, v in resp.headers.items():
        out.headers[k] = v
    return out
