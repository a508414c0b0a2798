"""Fault injection and Stripe's limits, as pipeline stages.

By concern: `config` (FaultConfig, its checks, coercion of CLI and control API
strings), `runtime` (the state in force: RNG, token buckets), `counters` (what
was counted, public), `stages` (the pipeline stages).

Everything here is off unless configured (`FaultConfig`), through
`EmulatorServer(faults=FaultConfig(...))` or keyword arguments, the CLI
(`--fault-429 0.2 ...`), the control API (`GET/POST /_emulator/faults`,
`GET /_emulator/stats`) or the pytest handle (`stripe_emulator.set_faults(...)`).

The stages and their order in the pipeline: stages.py.

So, as on Stripe, a 429 (rate limit or injected) is answered before the
idempotency layer and never stored: retrying with the same key runs the
request. An injected 500 is answered from inside it (the request "began
executing"), so v1 stores and replays it, as Stripe documents ("Retries with
the same key return the saved response, including 500 errors"), with
`Stripe-Should-Retry: false` as Stripe sends on such 500s. v2 stores only
successes (retries of failed v2 requests run again). A lost response records
the event, stores the 200 under the key, then drops the connection (or answers
500, `lost_mode="500"`). Timeouts hang until the client goes away (or
`timeout_s`), then drop the connection; `rate_timeout` runs nothing,
`rate_timeout_recorded` runs the request first.

Random faults apply to `paths` (default: the two meter event endpoints; `None`
or `("*",)`: every API call). One uniform draw per request picks at most one
fault, from a `random.Random(seed)`, so a seeded run is reproducible for a
given order of requests.

Limits (token buckets with a one-second burst, real time):
* `rate_limit_test`: requests/s for all test-mode API calls (Stripe's basic
  sandbox limit is 25; meter events count toward it) -> `global-rate`.
* `rate_limit_live`: live-mode `POST /v1/billing/meter_events` per second
  (Stripe: 1,000, a separate limit) -> `endpoint-rate`.
* `rate_limit_v2_test` / `rate_limit_v2_live`: events/s on the v2 meter event
  stream (Stripe: 10,000 live) -> `endpoint-rate`; a batch takes as many
  tokens as it has events.
* `concurrency_limit`: a second concurrent `POST /v1/billing/meter_events`
  for the same customer and meter -> 429 `concurrency_reason`
  (`endpoint-concurrency` by default).

Counters (`stats()`): requests and responses by status, 429s by reason,
injected faults, in-flight peaks overall, for meter event calls and per
(mode, customer, event name) key, whether or not the rule is enforced (so
a test can check a client never overlaps calls for one key).
"""

from .config import (LOST_MODES, METER_EVENT_PATHS, RATE_LIMIT_REASONS, V1_METER_EVENTS,
                     V2_STREAM, FaultConfig, coerce_options, parse_paths)
from .counters import Counters
from .runtime import Faults, TokenBucket
from .stages import (drop_connection, fault_after, fault_inject, fault_limits, fault_stats,
                     rate_limited, server_error)

__all__ = ["LOST_MODES", "METER_EVENT_PATHS", "RATE_LIMIT_REASONS", "V1_METER_EVENTS",
           "V2_STREAM", "Counters", "FaultConfig", "Faults", "TokenBucket", "coerce_options",
           "drop_connection", "fault_after", "fault_inject", "fault_limits", "fault_stats",
           "parse_paths", "rate_limited", "server_error"]
