"""
Whole units: Stripe's meter events take whole numbers, so usage is billed in whole
units, rounded toward zero; the fraction stays with the customer (the ledger's carry)
and is billed once it makes a unit. The one rounding rule every figure uses: the
ledger's sends, reconciliation's corrections, and what the admin shows as billed.
"""

from decimal import ROUND_DOWN, Decimal


def whole_units(value: Decimal) -> Decimal:
    """`value` in whole units, rounded toward zero (10.9 -> 10, -2.5 -> -2)."""
    return value.to_integral_value(rounding=ROUND_DOWN)
