"""
What a Stripe meter must be for Epsilon's reports to bill right.

Epsilon sends each report as the difference between what a period owes and what it
already sent, so the meter must add events up (`sum`) and keep every one of them: a
`count` meter bills the number of reports, a `last` meter only the latest difference,
and an `event_time_window` (a newer event in the same hour or day overwrites the older)
drops all but one report per window. The customer must be matched by id under the key
Epsilon sends. A meter that breaks a rule is refused at setup and nothing is sent to it.
"""

SUPPORTED_FORMULA = "sum"
SUPPORTED_MAPPING = "by_id"


def meter_problem(*, formula: str, event_time_window: str | None, mapping_type: str | None, meter_id: str) -> str | None:
    """Why usage reported to this meter would be billed wrong, or None."""
    fix = "Create a meter with the sum formula, no event time window and customer mapping by id, then run epsilon_setup."
    if formula != SUPPORTED_FORMULA:
        return (
            f"Stripe meter {meter_id} aggregates with {formula!r}: Epsilon reports usage as differences, "
            f"which only a 'sum' meter adds up. Nothing is sent to it. {fix}"
        )
    if event_time_window:
        return (
            f"Stripe meter {meter_id} has event_time_window={event_time_window!r}: a newer event in the "
            f"same {event_time_window} overwrites the older, so all but one report per {event_time_window} "
            f"would be lost. Nothing is sent to it. {fix}"
        )
    if mapping_type and mapping_type != SUPPORTED_MAPPING:
        return (
            f"Stripe meter {meter_id} maps customers by {mapping_type!r}: Epsilon sends Stripe customer ids. "
            f"Nothing is sent to it. {fix}"
        )
    return None


def problem_of_stripe_meter(stripe_meter) -> str | None:
    return meter_problem(
        formula=stripe_meter.default_aggregation.formula,
        event_time_window=getattr(stripe_meter, "event_time_window", None),
        mapping_type=stripe_meter.customer_mapping.type,
        meter_id=stripe_meter.id,
    )


def problem_of_mirrored_meter(meter) -> str | None:
    return meter_problem(
        formula=meter.aggregation_formula, event_time_window=meter.event_time_window or None,
        mapping_type=None, meter_id=meter.id,
    )
