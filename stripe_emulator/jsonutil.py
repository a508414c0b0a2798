"""JSON out, with Decimals written as exact numbers (never through float)."""

from __future__ import annotations

import json
import re
import secrets
from decimal import Decimal

from .store import format_decimal

# Decimals travel through json.dumps as tagged strings and are unquoted after.
_TAG = "dec" + secrets.token_hex(6)
_TAGGED = re.compile('"' + _TAG + r':(-?[0-9]+(?:\.[0-9]+)?)"')


def _tag(value):
    if isinstance(value, Decimal):
        return f"{_TAG}:{format_decimal(value)}"
    if isinstance(value, dict):
        return {k: _tag(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tag(v) for v in value]
    return value


def dumps(value, indent=2) -> str:
    return _TAGGED.sub(r"\1", json.dumps(_tag(value), indent=indent))
