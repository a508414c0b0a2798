"""`python -m stripe_emulator`: run the emulator in the foreground."""

from __future__ import annotations

import argparse
import os
import sys

from .context import DEFAULT_API_VERSION
from .faults import RATE_LIMIT_REASONS, FaultConfig, parse_paths
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
    f = parser.add_argument_group(
        "faults and limits", "all off unless given; random faults hit the meter event calls "
        "(POST /v1/billing/meter_events, POST /v2/billing/meter_event_stream) unless "
        "--fault-paths says otherwise")
    f.add_argument("--fault-429", type=float, default=0.0, metavar="P",
                   help="probability of a 429 (nothing recorded)")
    f.add_argument("--fault-429-reason", default="global-rate", choices=RATE_LIMIT_REASONS,
                   help="Stripe-Rate-Limited-Reason of injected 429s")
    f.add_argument("--fault-500", type=float, default=0.0, metavar="P",
                   help="probability of a 500 api_error (nothing recorded)")
    f.add_argument("--fault-lost", type=float, default=0.0, metavar="P",
                   help="probability that the event is recorded and the answer lost")
    f.add_argument("--fault-lost-mode", default="drop", choices=("drop", "500"),
                   help="a lost answer drops the connection (default) or is a 500")
    f.add_argument("--fault-timeout", type=float, default=0.0, metavar="P",
                   help="probability that the request hangs and is not recorded")
    f.add_argument("--fault-timeout-recorded", type=float, default=0.0, metavar="P",
                   help="probability that the request is recorded, then hangs")
    f.add_argument("--timeout-hang", type=float, default=30.0, metavar="S",
                   help="the longest a hanging request waits for the client to give up")
    f.add_argument("--latency-ms", type=float, default=0.0, help="added to each selected call")
    f.add_argument("--latency-jitter-ms", type=float, default=0.0,
                   help="plus a uniform random 0..J ms")
    f.add_argument("--seed", type=int, default=None, help="seed of the fault RNG")
    f.add_argument("--fault-paths", default=None, metavar="P,P,...|all",
                   help="API paths random faults and latency apply to (a trailing * is a "
                        "prefix; 'all': every API call)")
    f.add_argument("--concurrency-limit", action="store_true",
                   help="429 a second concurrent meter event call for the same customer and "
                        "meter (Stripe's rule)")
    f.add_argument("--rate-limit-test", type=float, default=0.0, metavar="N",
                   help="requests/s in test mode, all calls (Stripe: 25; 0: off)")
    f.add_argument("--rate-limit-live", type=float, default=0.0, metavar="N",
                   help="live v1 meter event calls/s (Stripe: 1000; 0: off)")
    f.add_argument("--rate-limit-v2-test", type=float, default=0.0, metavar="N",
                   help="v2 meter event stream events/s in test mode (0: off)")
    f.add_argument("--rate-limit-v2-live", type=float, default=0.0, metavar="N",
                   help="v2 meter event stream events/s in live mode (Stripe: 10000; 0: off)")
    f.add_argument("--stripe-limits", action="store_true",
                   help="Stripe's documented limits: --rate-limit-test 25 --rate-limit-live "
                        "1000 --rate-limit-v2-live 10000 --concurrency-limit (explicit "
                        "--rate-limit-* flags win)")
    args = parser.parse_args(argv)
    try:
        faults = fault_config(args)
    except (TypeError, ValueError) as e:
        parser.error(str(e))
    extra = {"billing_tick": args.billing_tick or None, "faults": faults}
    if args.webhook_retry_delays:
        extra["webhook_retry_delays"] = tuple(
            float(x) for x in args.webhook_retry_delays.split(",") if x.strip())

    if args.db:
        parent = os.path.dirname(os.path.abspath(args.db))
        os.makedirs(parent, exist_ok=True)
    server = EmulatorServer(args.host, args.port, db_path=args.db,
                            revoked_keys=args.revoked_key, verbose=not args.quiet, **extra)
    if faults != FaultConfig():
        changed = {k: v for k, v in faults.as_dict().items()
                   if v != FaultConfig().as_dict()[k]}
        print("Faults and limits: " + ", ".join(f"{k}={v}" for k, v in changed.items()),
              flush=True)
    state = (f"persistent, in {os.path.abspath(args.db)}" if args.db
             else "in memory (lost when the emulator stops; use --db PATH to keep it)")
    print(BANNER.format(url=server.url, version=DEFAULT_API_VERSION, state=state), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nStripe emulator stopped.", file=sys.stderr)
    return 0


def fault_config(args) -> FaultConfig:
    base = FaultConfig.stripe_limits() if args.stripe_limits else FaultConfig()
    options = dict(
        rate_429=args.fault_429, reason_429=args.fault_429_reason, rate_500=args.fault_500,
        rate_lost=args.fault_lost, lost_mode=args.fault_lost_mode,
        rate_timeout=args.fault_timeout, rate_timeout_recorded=args.fault_timeout_recorded,
        timeout_s=args.timeout_hang, latency_ms=args.latency_ms,
        jitter_ms=args.latency_jitter_ms, seed=args.seed)
    if args.concurrency_limit:
        options["concurrency_limit"] = True
    for name in ("rate_limit_test", "rate_limit_live", "rate_limit_v2_test",
                 "rate_limit_v2_live"):
        value = getattr(args, name)
        if value or not args.stripe_limits:
            options[name] = value
    if args.fault_paths is not None:
        options["paths"] = parse_paths(args.fault_paths)
    return base.replace(**options)


if __name__ == "__main__":
    sys.exit(main())
