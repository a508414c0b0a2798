"""
`/metrics`: Epsilon Billing in the Prometheus text format.

Two kinds of series, kept apart on purpose.

Read from the database at scrape time (`DatabaseCollector`). The ledger is the truth
about reporting, and it is shared by every web worker, every qcluster worker and every
`manage.py` command: a counter kept in one process's memory would see only that
process's share, and start again from zero whenever it restarts. So these are counted
in the database on each scrape, and any process answers them rightly:
- `epsilon_usage_reports{status,trigger}`: UsageReport rows (every pair, zeros too);
- `epsilon_units_sent_total`: units Stripe's meters were sent, the sum of `value_sent`
  of sent rows that are not reconciliation corrections (a row Stripe rejects later
  leaves the sum, which Prometheus takes for a counter reset);
- `epsilon_reports_in_flight` / `epsilon_reports_stale`: pending rows within / past
  their lease (EPSILON["PENDING_LEASE_SECONDS"]); stale ones are reports in doubt;
- `epsilon_reconciliation_periods{status}`: PeriodReconciliation rows (drift found is
  status="drift");
- `epsilon_last_successful_run_age_seconds`: since the newest successful django-q2 run
  of the reporting schedule stopped; no sample when it never succeeded (alert on
  `absent()` too);
- `epsilon_webhook_deliveries_total{processed,valid}`: dj-stripe's WebhookEventTrigger rows;
- `epsilon_metrics_database_up`: 0 when the database could not be read (those series
  are then missing; the per-process ones are still served).

Per process (prometheus_client metrics in `REGISTRY`, observed where the work happens):
- `epsilon_source_query_seconds{source}`: each usage-source totals query
  (billing.services.totals);
- `epsilon_stripe_request_seconds{method,path}` and `epsilon_stripe_errors_total{code}`:
  each HTTP attempt at Stripe, retries included (billing.stripe_api); ids in paths are
  replaced by `{id}`; `code` is Stripe's error code, else the HTTP status, or
  `connection_error` when no answer came.
With PROMETHEUS_MULTIPROC_DIR set (it must be set before the process starts, as
gunicorn's deploy config expects), every process writes these to files there and a
scrape of any worker sums them all (MultiProcessCollector); without it a scrape shows
the answering process's own.

Access: `Authorization: Bearer <METRICS_TOKEN>` when a token is set, or a REMOTE_ADDR
inside METRICS_ALLOWED_NETWORKS. A request relayed by a proxy (X-Forwarded-For,
Forwarded, X-Real-IP) needs the token: its REMOTE_ADDR is the proxy's, often loopback.
"""

import hmac
import ipaddress
import json
import logging
import os
import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from billing.conf import conf

logger = logging.getLogger(__name__)

# --- per process ------------------------------------------------------------------

disable_created_metrics()  # no `_created` series beside every counter and histogram
REGISTRY = CollectorRegistry(auto_describe=True)

SOURCE_QUERY_SECONDS = Histogram(
    "epsilon_source_query_seconds", "Time of one usage-source totals query.", ["source"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=REGISTRY,
)
STRIPE_REQUEST_SECONDS = Histogram(
    "epsilon_stripe_request_seconds", "Time of one HTTP request to Stripe (each retry counts).",
    ["method", "path"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY,
)
STRIPE_ERRORS = Counter(
    "epsilon_stripe_errors", "Stripe requests that failed: Stripe's error code, else the HTTP status.",
    ["code"], registry=REGISTRY,
)

# Stripe ids (cus_Q1w2..., mtr_test_61...) have digits or capitals; Stripe's path
# words are lower case, so anything else in a path is an id.
_PATH_WORD = re.compile(r"^(?:[a-z_]+|v\d+)$")


def stripe_path(url: str) -> str:
    """The path of a Stripe URL with its ids replaced by {id}: /v1/customers/{id}."""
    path = urlsplit(url).path
    return "/".join(s if not s or _PATH_WORD.match(s) else "{id}" for s in path.split("/"))


def _error_code(status: int, content) -> str:
    try:
        code = json.loads(content)["error"].get("code")
        if isinstance(code, str) and code:
            return code[:64]
    except Exception:  # not Stripe's JSON error: the status says enough
        pass
    return str(status)


def observe_stripe_request(method: str, url: str, seconds: float, status: int | None, content=b"") -> None:
    """Record one Stripe request (status None: no answer came). Never raises."""
    try:
        STRIPE_REQUEST_SECONDS.labels(method.upper(), stripe_path(url)).observe(seconds)
        if status is None:
            STRIPE_ERRORS.labels("connection_error").inc()
        elif status >= 400:
            STRIPE_ERRORS.labels(_error_code(status, content)).inc()
    except Exception:
        logger.debug("could not record a Stripe request metric", exc_info=True)


def observe_source_query(source_name: str, seconds: float) -> None:
    """Record one usage-source totals query. Never raises."""
    try:
        SOURCE_QUERY_SECONDS.labels(source_name or "unknown").observe(seconds)
    except Exception:
        logger.debug("could not record a source query metric", exc_info=True)


# --- from the database ------------------------------------------------------------


class DatabaseCollector(Collector):
    """Counts read from the database on each scrape: right whichever process answers."""

    def describe(self):
        return []  # registering must not query the database

    def collect(self):
        try:
            families = list(self._families())
        except Exception:
            logger.warning("metrics: could not read the database", exc_info=True)
            families, up = [], 0
        else:
            up = 1
        yield from families
        yield GaugeMetricFamily("epsilon_metrics_database_up", "1 when this scrape could read the database.", up)

    def _families(self):
        from django.db.models import Count, Q, Sum
        from django.utils import timezone
        from django_q.models import Task
        from djstripe.models import WebhookEventTrigger

        from billing.models import PeriodReconciliation, ReportStatus, ReportTrigger, UsageReport
        from billing.services.schedules import SCHEDULE_FUNC, SCHEDULE_NAME

        now = timezone.now()
        reports = GaugeMetricFamily(
            "epsilon_usage_reports", "Usage report rows by status and trigger.", labels=["status", "trigger"]
        )
        counts = {(r["status"], r["trigger"]): r["n"] for r in
                  UsageReport.objects.order_by().values("status", "trigger").annotate(n=Count("id"))}
        for status in ReportStatus.values:
            for trigger in ReportTrigger.values:
                reports.add_metric([status, trigger], counts.pop((status, trigger), 0))
        for (status, trigger), n in counts.items():  # values no longer in the choices
            reports.add_metric([status, trigger], n)
        yield reports

        units = UsageReport.objects.filter(UsageReport.COUNTS_TOWARD_TOTAL).aggregate(s=Sum("value_sent"))["s"]
        yield CounterMetricFamily(
            "epsilon_units_sent", "Units sent to Stripe by sent reports (corrections excluded).", float(units or 0)
        )

        lease_start = now - conf.pending_lease
        pending = UsageReport.objects.filter(status=ReportStatus.PENDING)
        yield GaugeMetricFamily(
            "epsilon_reports_in_flight", "Pending reports within their lease (being sent).",
            pending.filter(updated__gte=lease_start).count(),
        )
        yield GaugeMetricFamily(
            "epsilon_reports_stale", "Pending reports past their lease: in doubt, to be settled.",
            pending.filter(updated__lt=lease_start).count(),
        )

        periods = GaugeMetricFamily(
            "epsilon_reconciliation_periods", "Reconciled periods by status.", labels=["status"]
        )
        counts = dict(PeriodReconciliation.objects.order_by().values_list("status").annotate(n=Count("id")))
        for status in dict.fromkeys([*PeriodReconciliation.Status.values, *counts]):
            periods.add_metric([status], counts.get(status, 0))
        yield periods

        age = GaugeMetricFamily(
            "epsilon_last_successful_run_age_seconds",
            "Seconds since the reporting schedule's newest successful run stopped (no sample: never).",
        )
        stopped = (
            Task.objects.filter(Q(group=SCHEDULE_NAME) | Q(func=SCHEDULE_FUNC), success=True, stopped__isnull=False)
            .order_by("-stopped").values_list("stopped", flat=True).first()
        )
        if stopped is not None:
            age.add_metric([], max((now - stopped).total_seconds(), 0.0))
        yield age

        deliveries = CounterMetricFamily(
            "epsilon_webhook_deliveries", "Stripe webhook deliveries recorded by dj-stripe.",
            labels=["processed", "valid"],
        )
        counts = {(p, v): n for p, v, n in
                  WebhookEventTrigger.objects.order_by().values_list("processed", "valid").annotate(n=Count("id"))}
        for processed in (True, False):
            for valid in (True, False):
                deliveries.add_metric([str(processed).lower(), str(valid).lower()], counts.get((processed, valid), 0))
        yield deliveries


DATABASE_COLLECTOR = DatabaseCollector()


def scrape_registry() -> CollectorRegistry:
    """What one scrape exposes: the database counts, and every process's or this one's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)  # a registry is a collector of its own metrics
    registry.register(DATABASE_COLLECTOR)
    return registry


# --- the view ---------------------------------------------------------------------

FORBIDDEN = (
    "Forbidden: send 'Authorization: Bearer <EPSILON_METRICS_TOKEN>', or scrape from a network "
    "listed in EPSILON_METRICS_ALLOWED_NETWORKS.\n"
)


def allowed_networks():
    networks = []
    for cidr in settings.METRICS_ALLOWED_NETWORKS:
        if not cidr.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {cidr!r} is not a network ({exc})") from exc
    return networks


def may_scrape(request) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
    if any(h in request.META for h in ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")):
        return False  # relayed by a proxy: REMOTE_ADDR is the proxy's, not the scraper's
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    addresses = [address] + ([address.ipv4_mapped] if getattr(address, "ipv4_mapped", None) else [])
    return any(a in network for network in allowed_networks() for a in addresses if a.version == network.version)


def metrics_view(request):
    if not may_scrape(request):
        return HttpResponse(FORBIDDEN, status=403, content_type="text/plain; charset=utf-8")
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_PLAIN_0_0_4)
