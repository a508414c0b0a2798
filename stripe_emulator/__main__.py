"""`python -m stripe_emulator`: run the emulator in the foreground."""

from __future__ import annotations

import argparse
import os
import sys

from .context import DEFAULT_API_VERSION
from .server import EmulatorServer

BANNER = """\
======================================================================
  LOCAL STRIPE EMULATOR - for offline development, demos and tests
  This is NOT Stripe. Nothing is charged and nothing leaves this machine.

  API base URL : {url}
  API version  : {version} (echoes the request's Stripe-Version)
  API keys     : any sk_test_/rk_test_ (test mode) or sk_live_/rk_live_
                 (live-mode flag only) key with 24+ letters/digits
  State        : {state}
  Control API  : {url}/_emulator/health (time, reset, meter events, request log)

  Dashboard links (https://dashboard.stripe.com/...) do NOT show these
  objects: they exist only in this emulator. Inspect them with
  {url}/_emulator/objects?type=customer or the request log.
======================================================================"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stripe_emulator",
                                     description="Run the local Stripe emulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--db", default=None,
                        help="SQLite file to keep state in across restarts (default: memory)")
    parser.add_argument("--revoked-key", action="append", default=[],
                        help="an API key to answer with 401 'Expired API Key' (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="do not print one line per request")
    parser.add_argument("--webhook-retry-delays", default=None, metavar="S,S,...",
                        help="seconds between webhook delivery attempts (default: Stripe-like, "
                             "up to days; e.g. 1,5,30 for a demo)")
    parser.add_argument("--billing-tick", type=float, default=1.0,
                        help="seconds between billing-cycle checks of the emulator clock "
                             "(0: only when objects are read)")
    args = parser.parse_args(argv)
    extra = {"billing_tick": args.billing_tick or None}
    if args.webhook_retry_delays:
        extra["webhook_retry_delays"] = tuple(
            float(x) for x in args.webhook_retry_delays.split(",") if x.strip())

    if args.db:
        parent = os.path.dirname(os.path.abspath(args.db))
        os.makedirs(parent, exist_ok=True)
    server = EmulatorServer(args.host, args.port, db_path=args.db,
                            revoked_keys=args.revoked_key, verbose=not args.quiet, **extra)
    state = (f"persistent, in {os.path.abspath(args.db)}" if args.db
             else "in memory (lost when the emulator stops; use --db PATH to keep it)")
    print(BANNER.format(url=server.url, version=DEFAULT_API_VERSION, state=state), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nStripe emulator stopped.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
