"""The per-request context and typed access to Stripe-style params.

Params arrive as nested dicts/lists of strings (see forms.py). Handlers read
them through these helpers, which raise Stripe's own errors
("Missing required param", "Invalid integer", ...) and remember which params
were used, so the request log can show the ones the emulator ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Dict, Iterable, List, Optional

from . import errors
from .errors import InvalidRequest

DEFAULT_API_VERSION = "2026-08-26.dahlia"

_MISSING = object()


@dataclass
class ApiResponse:
    status: int
    body: Any
    headers: Dict[str, str] = field(default_factory=dict)


class Ctx:
    """Everything the pipeline knows about one API request."""

    def __init__(self, app, request, request_id: str):
        self.app = app
        self.store = app.store
        self.request = request
        self.request_id = request_id
        self.method = request.method.upper()
        self.path = request.path
        self.params: dict = {}
        self.query_params: dict = {}
        self.body_params: dict = {}
        self.api_key: Optional[str] = None
        self.livemode = False
        self.stripe_version = DEFAULT_API_VERSION
        self.idempotency_key: Optional[str] = request.headers.get("Idempotency-Key") or None
        self.idempotent_replayed = False
        self.route = None
        self.view_args: dict = {}
        self.used: set = set()
        # Scratch space for middlewares (fault injection, rate limiting, ...).
        self.notes: dict = {}

    # --- the base URL this client used (for request_log_url and list urls) --
    @property
    def base_url(self) -> str:
        return self.request.host_url.rstrip("/")

    def now(self) -> int:
        return self.store.now()

    # --- params ------------------------------------------------------------

    def has(self, name: str) -> bool:
        return name in self.params

    def raw(self, name: str, default=None):
        self.used.add(name)
        return self.params.get(name, default)

    def str(self, name: str, required: bool = False, default=None,
            max_length: Optional[int] = None, choices: Optional[Iterable[str]] = None,
            blank_is_none: bool = True) -> Optional[str]:
        value = self.raw(name, _MISSING)
        return coerce_str(name, value, required=required, default=default,
                          max_length=max_length, choices=choices, blank_is_none=blank_is_none)

    def int(self, name: str, required: bool = False, default=None,
            min: Optional[int] = None, max: Optional[int] = None) -> Optional[int]:
        return coerce_int(name, self.raw(name, _MISSING), required=required, default=default,
                          min=min, max=max)

    def bool(self, name: str, default=None) -> Optional[bool]:
        return coerce_bool(name, self.raw(name, _MISSING), default=default)

    def dict(self, name: str, required: bool = False) -> Optional[dict]:
        value = self.raw(name, _MISSING)
        if value is _MISSING:
            if required:
                raise errors.missing_param(name)
            return None
        if value == "":
            return {}
        if not isinstance(value, dict):
            raise InvalidRequest(f"Invalid object", param=name)
        return value

    def list(self, name: str, required: bool = False) -> Optional[List[Any]]:
        value = self.raw(name, _MISSING)
        if value is _MISSING:
            if required:
                raise errors.missing_param(name)
            return None
        if value == "":
            return []
        if isinstance(value, dict):
            # `items[0][price]` decodes to a list; a sparse/odd one stays a dict.
            raise InvalidRequest("Invalid array", param=name)
        if not isinstance(value, list):
            raise InvalidRequest("Invalid array", param=name)
        return value

    def expand(self) -> List[str]:
        value = self.raw("expand", [])
        if isinstance(value, str):
            value = [value] if value else []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidRequest("Invalid array", param="expand")
        return value

    def exclusive(self, *names: str) -> None:
        present = [n for n in names if n in self.params]
        if len(present) > 1:
            raise InvalidRequest(
                f"You may only specify one of these parameters: {', '.join(present)}.",
                code="parameters_exclusive", param=present[-1])

    def unused_params(self) -> List[str]:
        return sorted(k for k in self.params if k not in self.used)


# --- coercion helpers, usable on nested values too ------------------------


def coerce_str(name, value, required=False, default=None, max_length=None, choices=None,
               blank_is_none=True):
    if value is _MISSING or value is None:
        if required:
            raise errors.missing_param(name)
        return default
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid string: {_describe(value)}", param=name)
    if value == "" and blank_is_none:
        if required:
            raise InvalidRequest(
                f"You passed an empty string for '{name}'. We assume empty values are an "
                f"attempt to unset a parameter; however '{name}' cannot be unset. You should "
                f"remove '{name}' from your request or supply a non-empty value.",
                code="parameter_invalid_empty", param=name)
        return None
    if max_length is not None and len(value) > max_length:
        raise InvalidRequest(
            f"Invalid string: {value[:20]}...; must be at most {max_length} characters",
            code="string_length_exceeds_maximum", param=name)
    if choices is not None and value not in choices:
        choices = list(choices)
        listed = choices[0] if len(choices) == 1 else ", ".join(choices[:-1]) + f", or {choices[-1]}"
        raise InvalidRequest(
            f"Invalid {name.split('[')[-1].rstrip(']')}: must be one of {listed}", param=name)
    return value


def coerce_int(name, value, required=False, default=None, min=None, max=None):
    if value is _MISSING or value is None or value == "":
        if required:
            raise errors.missing_param(name)
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        n = int(value.strip())
    else:
        raise errors.invalid_integer(name, _describe(value))
    if min is not None and n < min:
        raise InvalidRequest(
            f"This value must be greater than or equal to {min}.",
            code="parameter_invalid_integer", param=name)
    if max is not None and n > max:
        raise InvalidRequest(
            f"This value must be less than or equal to {max}.",
            code="parameter_invalid_integer", param=name)
    return n


def coerce_bool(name, value, default=None):
    if value is _MISSING or value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if value in ("true", "True", "1"):
        return True
    if value in ("false", "False", "0"):
        return False
    raise InvalidRequest(f"Invalid boolean: {_describe(value)}", param=name)


def coerce_decimal(name, value, required=False, max_places: Optional[int] = None):
    if value is _MISSING or value is None or value == "":
        if required:
            raise errors.missing_param(name)
        return None
    if not isinstance(value, str) or not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value.strip()):
        raise InvalidRequest(f"Invalid decimal: {_describe(value)}", param=name)
    try:
        d = Decimal(value.strip())
    except InvalidOperation:  # pragma: no cover - the regex already rules this out
        raise InvalidRequest(f"Invalid decimal: {value}", param=name)
    if max_places is not None and -d.as_tuple().exponent > max_places:
        raise InvalidRequest(
            f"Invalid decimal: {value}; must contain at maximum {max_places} decimal places.",
            param=name)
    return d


def check_keys(src: dict, allowed, prefix: str) -> None:
    """Nested params outside Stripe's documented set are unknown params, as on Stripe."""
    for key in src:
        if key not in allowed:
            raise errors.unknown_param(f"{prefix}[{key}]")


def _describe(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: ..." for k in list(value)[:3]) + "}"
    if isinstance(value, list):
        return "[...]"
    return str(value)


MISSING = _MISSING
