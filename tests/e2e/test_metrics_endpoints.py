"""Prometheus metrics where an operator scrapes them: the gateway's own /metrics, counting each
call by its route's pattern and status, and a worker process's --metrics-port with the lag
gauges of what it follows."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from projections.registry import all_projections
from tests.e2e.conftest import bearer
from tests.e2e.test_run_command import (
    _free_port,
    _start,
    _stop,
    _wait_alive,
    machine_env,  # noqa: F401 (the fixture, shared with the run command's tests)
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
EVENT_ROUTE = "/api/v1/events/{slug}"


def _samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _scrape(api: TestClient) -> Samples:
    response = await api.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    # Outside the partner API: no key, no rate limit, no activity-log row.
    assert "X-RateLimit-Limit" not in response.headers
    return _samples(await response.text())


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_gateway_metrics_count_each_call_by_route_pattern_and_status(
    api: TestClient, demo_token: str
) -> None:
    before = await _scrape(api)
    for _ in range(2):
        found = await api.get("/api/v1/events/hamlet-2026", headers=bearer(demo_token))
        assert found.status == 200
    missing = await api.get("/api/v1/events/no-such-event", headers=bearer(demo_token))
    assert missing.status == 404
    after = await _scrape(api)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    route = {"route": EVENT_ROUTE, "method": "GET"}
    assert grew("linjerum_http_requests_total", **route, status="200") == 2
    assert grew("linjerum_http_requests_total", **route, status="404") == 1
    assert grew("linjerum_http_request_duration_seconds_count", **route) == 3
    assert grew("linjerum_http_request_duration_seconds_bucket", **route, le="+Inf") == 3
    assert grew("linjerum_http_request_duration_seconds_sum", **route) > 0
    # The pattern, never the path: no series per slug, code or token.
    assert not any(
        "hamlet-2026" in value or "no-such-event" in value
        for _, labels in after
        for _, value in labels
    )


def _metrics(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return _samples(response.read().decode())


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as refused:
        return refused.code


def _wait_until(
    proc: subprocess.Popen[bytes], log: Path, port: int, until: Callable[[Samples], bool]
) -> Samples:
    """The process's metrics once `until` holds for them (the process catching up)."""
    deadline = time.monotonic() + 60
    samples: Samples = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(OSError):
            samples = _metrics(port)
            if until(samples):
                return samples
        time.sleep(0.3)
    raise AssertionError(f"metrics never as expected: {samples}\n" + log.read_text())


def _projections_caught_up(samples: Samples) -> bool:
    return all(
        (name, frozenset({("projection", projection)})) in samples
        and _value(samples, name, projection=projection) == 0
        for projection in all_projections()
        for name in ("linjerum_projection_lag_events", "linjerum_projection_lag_seconds")
    )


@pytest.mark.timeout(240)
def test_worker_processes_serve_metrics_with_their_lag_gauges(
    machine_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    relay_port, projector_port = _free_port(), _free_port()
    data_dir = str(tmp_path / "d")
    relay_log, projector_log = tmp_path / "relay.log", tmp_path / "projector.log"
    # The relay on a metrics port of its own; the projector with /metrics beside its health.
    relay = _start(
        machine_env, relay_log, "relay", "--metrics-port", str(relay_port), "--data-dir", data_dir
    )
    projector = None
    try:
        relayed = _wait_until(
            relay,
            relay_log,
            relay_port,
            lambda m: (
                ("linjerum_relay_lag_events", frozenset({("relay", "main")})) in m
                and _value(m, "linjerum_relay_lag_events", relay="main") == 0
            ),
        )
        assert ("linjerum_relay_lag_seconds", frozenset({("relay", "main")})) in relayed
        assert not any(name.startswith("linjerum_projection_lag") for name, _ in relayed)
        assert _status(f"http://127.0.0.1:{relay_port}/healthz") == 404

        env = machine_env | {"LINJERUM_METRICS_PORT": str(projector_port)}
        projector = _start(
            env, projector_log, "projector", "--health-port", str(projector_port),
            "--data-dir", data_dir,
        )  # fmt: skip
        alive = _wait_alive(projector, projector_log, f"http://127.0.0.1:{projector_port}/healthz")
        assert "health" in alive["components"] and "metrics" not in alive["components"]
        projected = _wait_until(projector, projector_log, projector_port, _projections_caught_up)
        assert not any(name.startswith("linjerum_relay_lag") for name, _ in projected)
    finally:
        codes = [_stop(relay, signal.SIGTERM)]
        if projector is not None:
            codes.append(_stop(projector, signal.SIGTERM))
        assert codes == [0] * len(codes), relay_log.read_text() + projector_log.read_text()


@pytest.mark.timeout(240)
def test_a_run_shows_every_process_metrics_on_the_gateway(
    machine_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    port, stripe_port = _free_port(), _free_port()
    # A metrics port in the environment is for single-component processes, not a run's children.
    env = machine_env | {"STRIPE_SIM_PORT": str(stripe_port), "LINJERUM_METRICS_PORT": "1"}
    log = tmp_path / "run.log"
    run = _start(env, log, "run", "--data-dir", str(tmp_path / "d"), "--port", str(port))
    try:
        _wait_alive(run, log, f"http://127.0.0.1:{port}/healthz")
        # The demo data's events, published by the relay's process, counted on the gateway's.
        shown = _wait_until(
            run,
            log,
            port,
            lambda m: (
                _value(m, "linjerum_relay_published_events_total") > 0 and _projections_caught_up(m)
            ),
        )
        assert _value(shown, "linjerum_relay_lag_events", relay="main") == 0
        # The mailer's and the payments worker's outboxes, whose process is not scraped.
        for outbox in ("mail_outbox", "payment_outbox"):
            assert ("linjerum_outbox_depth", frozenset({("outbox", outbox)})) in shown
        # What has not happened yet (a conflict, a Stripe error, a failed e-mail) is named too,
        # as a lone process names it, for the scrapes and alerts that look for it.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        for name in (
            "linjerum_eventstore_append_conflicts",
            "linjerum_stripe_errors",
            "linjerum_outbox_failures",
        ):
            assert f"# TYPE {name}_total counter" in text
    finally:
        code = _stop(run, signal.SIGTERM)
    assert code == 0, log.read_text()
