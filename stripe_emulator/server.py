"""EmulatorServer: the app on a threaded werkzeug server, in a background thread."""

from __future__ import annotations

import threading
from typing import Iterable, Optional, Sequence

from werkzeug.serving import WSGIRequestHandler, make_server

from .app import EmulatorApp
from .faults import FaultConfig
from .store import Store
from .webhooks import DEFAULT_RETRY_DELAYS


class _QuietHandler(WSGIRequestHandler):
    # The request log (/_emulator/requests) replaces werkzeug's access log.
    def log_request(self, *args, **kwargs):
        pass


class EmulatorServer:
    """A local Stripe emulator.

        with EmulatorServer() as server:          # port 0: any free port
            client = stripe.StripeClient(key, base_addresses={"api": server.url})

    `db_path` persists state in a SQLite file; without it, state is in memory.
    `webhook_retry_delays`: seconds between delivery attempts (Stripe-like days
    by default; tests pass e.g. (0.1, 0.2)). `billing_tick`: how often the
    scheduler closes periods that real time passed (None: only lazily).
    Fault injection and limits (faults/), all off by default:
    `faults=FaultConfig(...)` (or `FaultConfig.stripe_limits()`), or the same
    options as keywords, e.g. `EmulatorServer(rate_429=0.2, seed=1,
    concurrency_limit=True, rate_limit_test=25)`; change them later with
    `server.set_faults(...)`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, db_path: Optional[str] = None,
                 revoked_keys: Iterable[str] = (), verbose: bool = False,
                 store: Optional[Store] = None,
                 webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
                 webhook_timeout: float = 10.0, billing_tick: Optional[float] = 1.0,
                 faults: Optional[FaultConfig] = None, **fault_options):
        self.host = host
        if isinstance(faults, dict):
            faults = FaultConfig().replace(**faults)
        faults = (faults or FaultConfig()).replace(**fault_options)
        self.store = store or Store(db_path)
        self.app = EmulatorApp(self.store, revoked_keys=revoked_keys, verbose=verbose,
                               webhook_retry_delays=webhook_retry_delays,
                               webhook_timeout=webhook_timeout, billing_tick=billing_tick,
                               faults=faults)
        self._server = make_server(host, port, self.app, threaded=True,
                                   request_handler=_QuietHandler)
        self._server.daemon_threads = True
        self.port = self._server.server_port
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "EmulatorServer":
        if self._thread is None:
            # A short poll interval makes stop() quick (tests start many servers).
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name="stripe-emulator", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the CLI); Ctrl-C stops it."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()
            self.app.close()
            self.store.close()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()
        self.app.close()
        self.store.close()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """See EmulatorApp.wait_idle: test clocks advanced, webhooks delivered."""
        return self.app.wait_idle(timeout)

    def set_faults(self, **options) -> FaultConfig:
        """Change fault options (FaultConfig fields); the rest stay as they are."""
        return self.app.faults.set(**options)

    def stats(self) -> dict:
        """Counters: requests by status, 429s by reason, faults, peak concurrency."""
        return self.app.faults.stats(self.store)

    def flush_webhooks(self, timeout: float = 10.0) -> bool:
        return self.app.webhooks.flush(timeout)

    def __enter__(self) -> "EmulatorServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
