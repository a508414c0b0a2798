"""
Every Epsilon option, once: its environment variable, type, default, meaning and check
(in the manner of django-q2's `Conf`).

settings.py builds `settings.EPSILON` from the environment with `from_environment`; the
app reads options as attributes of `conf` (`conf.PENDING_LEASE_SECONDS`), never
`settings.EPSILON` by key. A test's override of `settings.EPSILON` is seen at once; a
misspelt option is an AttributeError, not a silent default; a bad value is an
ImproperlyConfigured naming the variable and what it takes, when it is read and in
`manage.py check` (billing.checks), never a silent fallback (a typo in the meter event
API once meant "v1").
"""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class Option:
    name: str
    kind: type
    default: object
    meaning: str
    env: str | None = ""  # "" : EPSILON_<name>; None: not set from the environment
    choices: tuple = ()
    minimum: float | None = None

    @property
    def variable(self) -> str | None:
        return None if self.env is None else (self.env or f"EPSILON_{self.name}")

    def problem(self, value) -> str | None:
        """What is wrong with a value of this option, in words; None when it is right."""
        where = f"EPSILON[{self.name!r}]" + (f" ({self.variable})" if self.variable else "")
        if self.kind is Decimal:
            try:
                Decimal(str(value))
            except InvalidOperation:
                return f"{where} is {value!r}: it takes a decimal number as a string, e.g. {self.default!r}"
        elif not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            if not (self.kind is float and isinstance(value, int) and not isinstance(value, bool)):
                return f"{where} is {value!r}: it takes {self.kind.__name__} values, e.g. {self.default!r}"
        if self.choices and value not in self.choices:
            return f"{where} is {value!r}: use one of {', '.join(map(repr, self.choices))}"
        if self.minimum is not None and value < self.minimum:
            return f"{where} is {value!r}: it must be at least {self.minimum}"
        return None


OPTIONS = (
    Option("METER_EVENT_NAME", str, "epsilon_execution_duration", "The Stripe billing meter's event name usage is reported to."),
    Option("METER_DISPLAY_NAME", str, "Epsilon execution duration", "The meter's name in Stripe's dashboard.", env=None),
    Option("SOURCE_METER_SLUG", str, "m1", "The usage source's meter (OpenMeter slug) new Stripe meters map to."),
    Option("DEFAULT_WINDOW_SIZE", str, "HOUR", "Window new meters aggregate and report usage in.",
           env="EPSILON_WINDOW_SIZE", choices=("MINUTE", "HOUR", "DAY")),
    Option("PRODUCT_NAME", str, "Epsilon", "The Stripe product epsilon_setup creates.", env=None),
    Option("PRICE_LOOKUP_KEY", str, "epsilon_execution_monthly", "The metered price's lookup key (how setup finds it again)."),
    Option("PRICE_UNIT_AMOUNT_DECIMAL", Decimal, "10", "Cents per unit, as Stripe's unit_amount_decimal (a string, never a float).", env=None),
    Option("PRICE_CURRENCY", str, "usd", "The price's currency.", env=None),
    Option("DEMO_CUSTOMER_EMAIL", str, "demo-customer@epsilon.example", "The demo customer's email (epsilon_setup --demo-customer).", env=None),
    Option("SUBJECT_METADATA_KEY", str, "", "Customer metadata key holding the usage subject; empty: the customer id is the subject."),
    Option("PENDING_LEASE_SECONDS", int, 300, "A pending report untouched this long belongs to a run that died; the next run "
           "resends it with the same identifier.", minimum=0),
    Option("STRIPE_METER_EVENTS_PER_SECOND", float, 0.0, "v1 meter events per second (0: Stripe's limit for the key's "
           "mode, 1,000/s live, 25/s in test mode).", minimum=0),
    Option("STRIPE_SEND_CONCURRENCY", int, 16, "Threads sending meter events.", minimum=1),
    Option("STRIPE_METER_EVENT_API", str, "auto", "v1 (a call per event), v2 (Stripe's stream, 100 events a call) or "
           "auto (v2 from STRIPE_STREAM_THRESHOLD events).", choices=("auto", "v1", "v2")),
    Option("STRIPE_STREAM_THRESHOLD", int, 500, "Runs of at least this many events use the v2 stream when the API is auto.", minimum=1),
    Option("STRIPE_STREAM_EVENTS_PER_SECOND", float, 0.0, "v2 stream events per second (0: Stripe's limit, 10,000/s live).", minimum=0),
    Option("STRIPE_MAX_ATTEMPTS", int, 5, "Attempts per meter event on 429s, 5xx and network errors.", minimum=1),
    Option("STRIPE_BACKOFF_SECONDS", float, 0.5, "First backoff between attempts (exponential, with jitter).", minimum=0),
    Option("LATE_USAGE", str, "carry", "Late usage of a period whose invoice is final: carry (billed with the next period) "
           "or record (a flagged row, billed nowhere).", choices=("carry", "record")),
    Option("REPORT_BATCH_SIZE", int, 1000, "Customers a run reads, claims, sends and settles at a time (its memory "
           "grows with this, not with the number of customers).", minimum=1),
    Option("REPORT_SHARDS", int, 1, "django-q2 tasks a scheduled or webhook run fans out to, by customer shard "
           "(1: the run is one task).", minimum=1),
    Option("REPORT_INTERVAL_MINUTES", int, 60, "How often the django-q2 schedule reports usage.", minimum=1),
)
BY_NAME = {option.name: option for option in OPTIONS}
_CASTS = {str: "str", int: "int", float: "float", Decimal: "str"}


def from_environment(env) -> dict:
    """settings.EPSILON: each option from its environment variable, or its default."""
    values = {}
    for option in OPTIONS:
        if option.variable is None:
            values[option.name] = option.default
        else:
            values[option.name] = getattr(env, _CASTS[option.kind])(option.variable, default=option.default)
    return values


def problems(values: dict) -> list[str]:
    """Every wrong or unknown option in a settings.EPSILON, in words."""
    found = [f"EPSILON[{name!r}] is not an Epsilon option (misspelt?)" for name in sorted(set(values) - set(BY_NAME))]
    for option in OPTIONS:
        if option.name in values:
            problem = option.problem(values[option.name])
            if problem:
                found.append(problem)
    return found


class Conf:
    """The options as attributes, read from settings.EPSILON each time (tests override it)."""

    def __getattr__(self, name):
        option = BY_NAME.get(name)
        if option is None:
            raise AttributeError(f"{name} is not an Epsilon option")
        value = getattr(settings, "EPSILON", {}).get(name, option.default)
        problem = option.problem(value)
        if problem:
            raise ImproperlyConfigured(problem)
        return Decimal(str(value)) if option.kind is Decimal else value

    @property
    def pending_lease(self) -> timedelta:
        """PENDING_LEASE_SECONDS as a duration."""
        return timedelta(seconds=self.PENDING_LEASE_SECONDS)


conf = Conf()
