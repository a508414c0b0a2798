"""Ids that look like Stripe's (prefix + random base62), so code that checks
prefixes or lengths behaves the same against the emulator."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits

# prefix -> length of the random part, as seen in Stripe's own objects.
LENGTHS = {
    "prod": 14,
    "cus": 14,
    "si": 14,
    "price": 24,
    "sub": 24,
    "req": 14,
    "mtr": 32,
    "mtrusg": 32,
    "clock": 24,
    "in": 24,
    "evt": 24,
    "il": 24,
    "we": 24,
    "whsec": 32,
}

# The emulator has one account; its id is stable across runs and databases.
ACCOUNT_ID = "acct_1EmuLat0rEpsi10n"


def random_part(n: int) -> str:
    """n uniform base62 characters from one os.urandom read (bytes below 248 = 4 x 62,
    the rest dropped): secrets.choice per character is a system call per character,
    and every request makes a request id."""
    out: list = []
    while len(out) < n:
        out.extend(_ALPHABET[b % 62] for b in secrets.token_bytes(n + 4) if b < 248)
    return "".join(out[:n])


def new_id(prefix: str, livemode: bool = False) -> str:
    n = LENGTHS.get(prefix, 24)
    if prefix == "mtr":
        # Meters carry the mode in the id: mtr_test_61Q8nQMq...
        return ("mtr_" if livemode else "mtr_test_") + "61" + random_part(n - 2)
    return f"{prefix}_{random_part(n)}"


def request_id() -> str:
    return new_id("req")
