"""What the fault stages do: `FaultConfig`, its checks, and the coercion of the
strings the CLI and the control API send into its typed fields.

A configuration is always valid once made: `validated()` (called by every way
of making or changing one) refuses probabilities outside [0, 1] or adding up
to more than 1, negative rates and times, unknown rate-limit reasons, and
normalises `paths` ("all", "*" or empty -> None, meaning every API call), so a
running emulator never holds a configuration it cannot apply. Each option is
coerced by its declared type (`typing.get_type_hints`), so adding a field
needs no new parsing code.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Optional, Tuple

V1_METER_EVENTS = "/v1/billing/meter_events"
V2_STREAM = "/v2/billing/meter_event_stream"
METER_EVENT_PATHS = (V1_METER_EVENTS, V2_STREAM)
RATE_LIMIT_REASONS = ("global-rate", "global-concurrency", "endpoint-rate",
                      "endpoint-concurrency", "resource-specific")
LOST_MODES = ("drop", "500")
ALL_PATHS = ("", "all", "*", "null", "none")

# Stripe's documented limits, for `FaultConfig.stripe_limits()` / `--stripe-limits`.
STRIPE_TEST_RATE = 25.0        # sandbox: 25 operations/s, meter events included
STRIPE_LIVE_METER_RATE = 1000.0  # live v1 meter events: 1,000 calls/s
STRIPE_LIVE_V2_RATE = 10000.0  # v2 meter event stream: 10,000/s in live mode

_PROBABILITIES = ("rate_429", "rate_500", "rate_lost", "rate_timeout", "rate_timeout_recorded")
_NON_NEGATIVE = ("timeout_s", "latency_ms", "jitter_ms", "rate_limit_test", "rate_limit_live",
                 "rate_limit_v2_test", "rate_limit_v2_live")


@dataclass
class FaultConfig:
    rate_429: float = 0.0            # probability of an injected 429 (nothing recorded)
    reason_429: str = "global-rate"  # its Stripe-Rate-Limited-Reason
    rate_500: float = 0.0            # probability of a 500 api_error (nothing recorded)
    rate_lost: float = 0.0           # recorded, then the answer is lost
    lost_mode: str = "drop"          # "drop": close the connection; "500": answer 500
    rate_timeout: float = 0.0        # hang, run nothing, drop
    rate_timeout_recorded: float = 0.0  # run (recorded), then hang and drop
    timeout_s: float = 30.0          # the longest a hang lasts (it ends early if the client leaves)
    latency_ms: float = 0.0          # added to every selected call
    jitter_ms: float = 0.0           # plus uniform 0..jitter_ms
    seed: Optional[int] = None
    paths: Optional[Tuple[str, ...]] = METER_EVENT_PATHS  # None: all API calls
    concurrency_limit: bool = False
    concurrency_reason: str = "endpoint-concurrency"
    rate_limit_test: float = 0.0     # requests/s, test mode, all calls (0: off)
    rate_limit_live: float = 0.0     # live v1 meter event calls/s (0: off)
    rate_limit_v2_test: float = 0.0  # v2 stream events/s, test mode (0: off)
    rate_limit_v2_live: float = 0.0  # v2 stream events/s, live mode (0: off)

    @classmethod
    def stripe_limits(cls, **overrides) -> "FaultConfig":
        """Stripe's documented limits on, no random faults."""
        base = dict(rate_limit_test=STRIPE_TEST_RATE, rate_limit_live=STRIPE_LIVE_METER_RATE,
                    rate_limit_v2_live=STRIPE_LIVE_V2_RATE, concurrency_limit=True)
        base.update(overrides)
        return cls(**base).validated()

    def validated(self) -> "FaultConfig":
        for name in _PROBABILITIES:
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1, got {v}")
        total = sum(getattr(self, name) for name in _PROBABILITIES)
        if total > 1.0 + 1e-9:
            raise ValueError(f"the fault probabilities add up to {total} > 1")
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("reason_429", "concurrency_reason"):
            if getattr(self, name) not in RATE_LIMIT_REASONS:
                raise ValueError(f"{name} must be one of {', '.join(RATE_LIMIT_REASONS)}")
        if self.lost_mode not in LOST_MODES:
            raise ValueError("lost_mode must be 'drop' or '500'")
        if self.paths is not None:
            paths = tuple(self.paths)
            self.paths = None if paths in ((), ("*",), ("all",)) else paths
        return self

    def replace(self, **changes) -> "FaultConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown fault option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes).validated()

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["paths"] = list(self.paths) if self.paths is not None else None
        return d


# --- option coercion (CLI and control API strings) -------------------------------------


def parse_paths(value) -> Optional[Tuple[str, ...]]:
    """`"a,b"` or a list -> a tuple of paths; "all", "*", empty, None -> None (every call)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ALL_PATHS):
        return None
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return tuple(p.strip() for p in str(value).split(",") if p.strip())


def _optional_int(value) -> Optional[int]:
    return None if value in (None, "", "null", "none") else int(value)


def _bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")


# By declared type; `paths` has its own syntax.
_COERCE_BY_TYPE = {float: float, str: str, bool: _bool, Optional[int]: _optional_int}
_FIELD_TYPES = typing.get_type_hints(FaultConfig)


def coerce_options(raw: dict) -> dict:
    """Control API / CLI values (strings, or JSON values) to FaultConfig field types."""
    out = {}
    for name, value in raw.items():
        if name not in _FIELD_TYPES:
            raise TypeError(f"unknown fault option: {name}")
        if name == "paths":
            out[name] = parse_paths(value)
        else:
            out[name] = _COERCE_BY_TYPE[_FIELD_TYPES[name]](value)
    return out
