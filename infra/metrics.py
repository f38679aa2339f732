"""Every Prometheus metric of the service, defined once so the names, labels and buckets a
dashboard or an alert relies on live in one place (ops/grafana/linjerum.json reads them).

Labels stay low-cardinality: a route's pattern (never its path), a status code, a stream
category, a projection, an outbox, a Stripe call; never an id. The lag gauges are set when
/metrics is scraped (services/health.py), never per event.

The processes of one `linjerum run` share a folder of counters (prometheus_client's
multiprocess mode, `share_between_processes`), so the gateway's /metrics shows them all."""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# prometheus_client reads it when first imported: set it before a process starts, not in one.
SHARED_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID = re.compile(r"_(\d+)\.db$")

# Seconds, from a cached read (a few ms) to a request worth a look (over a second).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200)

HTTP_REQUESTS = Counter(
    "linjerum_http_requests",
    "HTTP requests answered by the gateway, by route pattern, method and status",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "linjerum_http_request_duration_seconds",
    "Time from a request's arrival to its response, by route pattern and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)

APPENDS = Counter(
    "linjerum_eventstore_appends",
    "Appends tried on the event store (stored or refused), by their first stream's category",
    ["category"],
)
APPEND_CONFLICTS = Counter(
    "linjerum_eventstore_append_conflicts",
    "Appends refused because another writer moved a stream first (optimistic concurrency)",
    ["category"],
)
APPEND_LATENCY = Histogram(
    "linjerum_eventstore_append_duration_seconds",
    "Time of one append, stored or refused",
    ["category"],
    buckets=LATENCY_BUCKETS,
)

DESK_BATCH_SIZE = Histogram(
    "linjerum_desk_batch_size",
    "Commands a sales desk decided and appended together",
    ["category"],
    buckets=BATCH_BUCKETS,
)
DESK_QUEUE_DEPTH = Gauge(
    "linjerum_desk_queue_depth",
    "Commands waiting at this process's sales desks",
    ["category"],
    multiprocess_mode="livesum",
)

RELAY_PUBLISHED = Counter(
    "linjerum_relay_published_events", "Events the relay published to JetStream and saw acked"
)
# Labelled by the relay's checkpoint name, so only a process that measures them exports them.
RELAY_LAG_EVENTS = Gauge(
    "linjerum_relay_lag_events",
    "Committed events the relay has yet to publish (counted up to 10,000)",
    ["relay"],
    multiprocess_mode="livemax",
)
RELAY_LAG_SECONDS = Gauge(
    "linjerum_relay_lag_seconds",
    "Age of the oldest event the relay has yet to publish",
    ["relay"],
    multiprocess_mode="livemax",
)
PROJECTION_LAG_EVENTS = Gauge(
    "linjerum_projection_lag_events",
    "Committed events of its categories a read model has yet to apply (counted up to 10,000)",
    ["projection"],
    multiprocess_mode="livemax",
)
PROJECTION_LAG_SECONDS = Gauge(
    "linjerum_projection_lag_seconds",
    "Age of the oldest event a read model has yet to apply",
    ["projection"],
    multiprocess_mode="livemax",
)

STRIPE_LATENCY = Histogram(
    "linjerum_stripe_request_duration_seconds",
    "Time of one Stripe call, the SDK's retries included",
    ["call"],
    buckets=LATENCY_BUCKETS,
)
STRIPE_ERRORS = Counter(
    "linjerum_stripe_errors",
    "Stripe calls that failed, by call and Stripe's error code",
    ["call", "code"],
)

RATE_CLAIMS = Counter(
    "linjerum_rate_limit_claims",
    "Slices of shared rate-limit windows claimed on the database: waited (calls waited for the"
    " claim) or ahead (claimed while calls were still at hand)",
    ["how"],
)

OUTBOX_DEPTH = Gauge(
    "linjerum_outbox_depth",
    "Rows of an outbox (mail, payment) not yet carried out and not given up",
    ["outbox"],
    multiprocess_mode="livemax",
)
OUTBOX_FAILURES = Counter(
    "linjerum_outbox_failures",
    "Outbox rows whose attempt failed, by outcome: retry (scheduled again) or abandoned",
    ["outbox", "outcome"],
)

PDF_RENDER = Histogram(
    "linjerum_pdf_render_duration_seconds",
    "Time to render a ticket's or a purchase's PDF, waiting for a render worker included",
    ["step"],
    buckets=LATENCY_BUCKETS,
)


@functools.cache
def _request_series(route: str, method: str, status: int) -> tuple[Histogram, Counter]:
    return HTTP_LATENCY.labels(route, method), HTTP_REQUESTS.labels(route, method, str(status))


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """One answered request. The series are looked up once per (route, method, status), a
    bounded set: `labels()` costs twice what counting does."""
    latency, requests = _request_series(route, method, status)
    latency.observe(seconds)
    requests.inc()


@functools.cache
def _append_series(category: str) -> tuple[Histogram, Counter]:
    return APPEND_LATENCY.labels(category), APPENDS.labels(category)


def observe_append(category: str, seconds: float) -> None:
    """One append tried, stored or refused."""
    latency, appends = _append_series(category)
    latency.observe(seconds)
    appends.inc()


def share_between_processes(directory: Path) -> None:
    """Processes started from now on (the children of a `linjerum run`) write their metrics
    into a folder of this run's own under `directory` (named by its process id), so a run
    starts from zero and another run on the same data folder neither empties nor adds to it;
    each one's /metrics shows the sum of its run's processes. Folders of runs that ended go."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.name.isdigit() and entry.is_dir() and psutil.pid_exists(int(entry.name)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    mine = directory / str(os.getpid())
    shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir()
    os.environ[SHARED_DIR_ENV] = str(mine.resolve())


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric of this process (of every process of the run, when
    they share a folder), and its content type."""
    shared = os.environ.get(SHARED_DIR_ENV)
    if not shared:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    _forget_dead_processes(Path(shared))
    registry = CollectorRegistry()
    registry.register(_RunMetrics(shared))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _RunMetrics(Collector):
    """The run's processes' metrics added up, read once per scrape, and those no process has a
    value of yet (no conflict, no Stripe error, no failed e-mail so far) named with their help
    and type, as a lone process names them, instead of missing, which a scrape or an alert
    looks for."""

    def __init__(self, shared: str) -> None:
        self._counted = multiprocess.MultiProcessCollector(None, shared)

    def collect(self) -> Iterable[Metric]:
        counted = list(self._counted.collect())
        yield from counted
        named = {family.name for family in counted}
        for family in REGISTRY.collect():
            if family.name.startswith("linjerum_") and family.name not in named:
                yield Metric(family.name, family.documentation, family.type, family.unit)


def _forget_dead_processes(shared: Path) -> None:
    """A restarted child's gauges replace its predecessor's; its counters keep adding up."""
    for path in shared.glob("gauge_live*.db"):
        found = _PID.search(path.name)
        if found and not psutil.pid_exists(int(found.group(1))):
            multiprocess.mark_process_dead(int(found.group(1)), str(shared))
