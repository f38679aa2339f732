"""`linjerum run` on a fresh machine: embedded PostgreSQL and NATS from an empty data folder,
demo data seeded once, CLI commands reaching the running servers, and a clean Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from projections.registry import all_projections

LINJERUM = [sys.executable, "-m", "services.cli"]
GROUPS = {"gateway", "relay+projector", "sweeper+mailer+payments"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    env["LINJERUM_LOG_LEVEL"] = "warning"
    return env


def _cli(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LINJERUM, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env or _env(),
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def _call(method: str, url: str, token: str | None = None, body: object = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _buy_and_pay(port: int, stripe_port: int, token: str) -> dict:
    """The quick start against a running `linjerum run`: buy, pay at the simulator, poll."""
    api = f"http://127.0.0.1:{port}/api/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            event = _call("GET", f"{api}/events/hamlet-2026", token)
            break
        except urllib.error.HTTPError:
            assert time.monotonic() < deadline, "the catalog was never projected"
            time.sleep(0.2)
    barn = event["ticket_types"][1]
    order = {
        "event_slug": "hamlet-2026",
        "quantities": {str(barn["id"]): 1},
        "buyer": {"name": "Run Test", "email": "run@example.com"},
    }
    created = _call("POST", f"{api}/purchases", token, order)
    intent = created["payment"]["stripe_payment_intent_id"]
    sim = f"http://127.0.0.1:{stripe_port}/_sim/payment_intents/{intent}/succeed"
    _call("POST", sim, body={})
    token_url = f"{api}/purchases/{created['purchase']['token']}"
    while time.monotonic() < deadline:
        purchase = _call("GET", token_url, token)["purchase"]
        if purchase["paid_at"]:
            return purchase
        time.sleep(0.1)
    raise AssertionError("the webhook never marked the purchase paid")


def _children(pid: int) -> dict[str, int]:
    """The component processes of a `linjerum run`, by group."""
    found = {}
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.Error):
            argv = child.cmdline()
            if "--child" in argv and child.status() != psutil.STATUS_ZOMBIE:
                found[argv[argv.index("--child") + 1]] = child.pid
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Service:
    def __init__(self, data_dir: Path) -> None:
        self.port = _free_port()
        self.stripe_port = _free_port()
        self.data_dir = data_dir
        self.output = data_dir.parent / f"run-{self.port}.log"
        self.proc = subprocess.Popen(
            [*LINJERUM, "--data-dir", str(data_dir), "run", "--port", str(self.port)],
            stdout=self.output.open("w"),
            stderr=subprocess.STDOUT,
            env=_env() | {"STRIPE_SIM_PORT": str(self.stripe_port)},
            start_new_session=True,
        )

    def buy_and_pay(self, token: str) -> dict:
        return _buy_and_pay(self.port, self.stripe_port, token)

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output.read_text()
            try:
                url = f"http://127.0.0.1:{self.port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError("service never became healthy:\n" + self.output.read_text())

    def interrupt(self) -> int:
        """Ctrl-C; a run that does not stop fails the test and is killed, never left behind."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise


@pytest.mark.timeout(400)
def test_run_from_an_empty_folder_seeds_once_and_stops_cleanly(server_dir: Path) -> None:
    data_dir = server_dir / "data"
    service = Service(data_dir)
    try:
        service.wait_healthy()
        children = _children(service.proc.pid)
        assert set(children) == GROUPS
        # What can wait (mail, expiries, refunds) yields the cores to the sale.
        niceness = {group: psutil.Process(pid).nice() for group, pid in children.items()}
        assert niceness == {"gateway": 0, "relay+projector": 0, "sweeper+mailer+payments": 10}
        autogroup = Path(f"/proc/{children['sweeper+mailer+payments']}/autogroup").read_text()
        assert autogroup.split()[-1] == "10"
        out = service.output.read_text()
        assert out.count("demo API key (det-ny-teater): tk_live_") == 1
        assert out.count("linjerum is running on") == 1
        demo_key = out.split("demo API key (det-ny-teater): ")[1].split()[0]
        paid = service.buy_and_pay(demo_key)
        assert paid["tickets"][0]["ticket_status"] == "valid"
        deadline = time.monotonic() + 30
        while not list((data_dir / "mail").glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.2)
        (message,) = (data_dir / "mail").glob("*.eml")
        assert paid["access_code"] in message.read_text()
        runtime = json.loads((data_dir / "runtime.json").read_text())
        pids = [entry["pid"] for entry in runtime.values()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)

        # Other commands reach the running service's database instead of starting their own.
        again = _cli(data_dir, "seed-demo")
        assert again.returncode == 0, again.stderr
        assert all(v == 0 for v in json.loads(again.stdout.splitlines()[-1]).values())

        created = _cli(
            data_dir,
            "keys",
            "create",
            "--org",
            "det-ny-teater",
            "--name",
            "shop",
            "--allowed-origin",
            "https://TeaterBilletten.dk/",
            "--rate-limit",
            "60",
        )
        assert created.returncode == 0, created.stderr
        issued = json.loads(created.stdout.strip().splitlines()[-1])
        assert issued["token"].startswith("tk_live_")
        listed = _cli(data_dir, "keys", "list", "--org", "det-ny-teater")
        keys = [json.loads(line) for line in listed.stdout.splitlines()]
        mine = next(k for k in keys if k["id"] == issued["id"])
        assert mine["allowed_origins"] == ["https://teaterbilletten.dk"]
        assert mine["rate_limit_per_minute"] == 60
        assert issued["token"] not in listed.stdout
        revoked = _cli(data_dir, "keys", "revoke", str(issued["id"]))
        assert json.loads(revoked.stdout)["revoked_at"] is not None
        assert _cli(data_dir, "keys", "create", "--org", "nope", "--name", "x").returncode == 1
        anywhere = ("--name", "x", "--allowed-origin", "*")
        refused = _cli(data_dir, "keys", "create", "--org", "det-ny-teater", *anywhere)
        assert refused.returncode == 2 and "'*' is not an origin" in refused.stderr

        rebuilt = _cli(data_dir, "rebuild", "catalog")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert json.loads(rebuilt.stdout)["replayed"] > 0
    finally:
        code = service.interrupt()
    assert code in (0, 130), service.output.read_text()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids), "an embedded server outlived Ctrl-C"
    assert not any(_alive(p) for p in children.values()), "a component outlived Ctrl-C"
    assert _port_free(service.port)
    assert not (data_dir / "runtime.json").exists()

    # A second run on the same folder reuses the data: nothing is seeded twice.
    second = Service(data_dir)
    try:
        second.wait_healthy()
        seeded = _cli(data_dir, "seed-demo")
        assert all(v == 0 for v in json.loads(seeded.stdout.splitlines()[-1]).values())
        listed = _cli(data_dir, "keys", "list", "--org", "det-ny-teater")
        assert str(issued["id"]) in listed.stdout
    finally:
        assert second.interrupt() in (0, 130)


@pytest.fixture(scope="module")
async def machine_env(servers: tuple[str, str]):
    """Environment for a `linjerum` process on the machine's servers (no embedded start, so
    quick), with a database and a JetStream stream of its own."""
    import asyncpg

    admin_url, nats_url = servers
    run = os.urandom(5).hex()
    database = f"linjerum_run_{run}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    env = _env() | {
        "DATABASE_URL": f"{admin_url.rpartition('/')[0]}/{database}",
        "NATS_URL": nats_url,
        "LINJERUM_NATS_STREAM": f"LJRUN_{run.upper()}",
        "LINJERUM_SUBJECT_PREFIX": f"ljrun.{run}",
    }
    yield env
    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await admin.close()


def _ignore_sigint() -> None:
    """What a shell does to a command started with `&`: SIGINT ignored, inherited by Python."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*LINJERUM, *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=_ignore_sigint,
    )


def _start_worker(
    env: dict[str, str], tmp_path: Path, component: str, *options: str
) -> tuple[subprocess.Popen[bytes], Path, int]:
    """`linjerum COMPONENT` with its own /healthz port; the process, its log and that port."""
    health_port = _free_port()
    log = tmp_path / f"{component}.log"
    data = str(tmp_path / "d")
    args = [component, *options, "--health-port", str(health_port), "--data-dir", data]
    return _start(env, log, *args), log, health_port


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def _wait_alive(proc: subprocess.Popen[bytes], log: Path, url: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(OSError):
            status, body = _get(url)
            if status == 200:
                return body
        time.sleep(0.2)
    raise AssertionError("never alive:\n" + log.read_text())


def _ready_checks(port: int) -> dict:
    """/readyz's checks once the database answered it: a probe that meets a database busy
    with processes starting (a timeout) reports that check alone."""
    deadline = time.monotonic() + 30
    while True:
        checks = _get(f"http://127.0.0.1:{port}/readyz")[1]["checks"]
        if checks["database"]["ok"] or time.monotonic() > deadline:
            return checks
        time.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes], signum: int, log: Path | None = None) -> int:
    """Send `signum`; a process that does not stop fails the test (with its `log`) and is
    killed."""
    proc.send_signal(signum)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        said = log.read_text() if log is not None else ""
        raise AssertionError(
            f"still running 30 s after {signal.Signals(signum).name}:\n{said}"
        ) from None


# What /healthz lists: one process's tasks, or the gateway's and its sibling processes'.
SINGLE = {"gateway", "relay", "sweeper", "mailer", "projector"}
SPLIT = {"gateway", "process:relay+projector", "process:sweeper+mailer+payments"}


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("signum", "mode", "components"),
    [
        (signal.SIGINT, (), SPLIT),
        (signal.SIGTERM, (), SPLIT),
        (signal.SIGINT, ("--single-process",), SINGLE),
    ],
    ids=["SIGINT", "SIGTERM", "single-process"],
)
def test_a_background_run_stops_on_signals_and_a_second_run_says_the_port_is_taken(
    machine_env: dict[str, str],
    tmp_path: Path,
    signum: int,
    mode: tuple[str, ...],
    components: set[str],
) -> None:
    port, stripe_port = _free_port(), _free_port()
    env = machine_env | {"STRIPE_SIM_PORT": str(stripe_port)}
    log = tmp_path / "first.log"
    # --data-dir after the command, as the README promises for every command.
    first = _start(env, log, "run", *mode, "--data-dir", str(tmp_path / "d"), "--port", str(port))
    try:
        alive = _wait_alive(first, log, f"http://127.0.0.1:{port}/healthz")
        assert alive["status"] == "alive"
        assert components <= set(alive["components"])
        assert set(alive["components"].values()) == {"running"}
        assert len(_children(first.pid)) == (0 if mode else len(GROUPS))
        checks = _ready_checks(port)
        assert {"database", "nats", "relay", "projection:catalog", "components"} <= set(checks)

        second = subprocess.run(
            [*LINJERUM, "--data-dir", str(tmp_path / "d"), "run", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        said = (second.stdout + second.stderr).strip().splitlines()
        assert second.returncode != 0
        assert len(said) == 1, said
        assert str(port) in said[0] and "already in use" in said[0]
        assert "demo API key" not in second.stdout and "running" not in second.stdout
        # The refused run left the running one's metrics alone.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as scraped:
            assert b"linjerum_http_requests_total" in scraped.read()
    finally:
        code = _stop(first, signum, log)
    assert code == (130 if signum == signal.SIGINT else 0), log.read_text()


@pytest.mark.timeout(120)
def test_a_worker_process_serves_its_own_health_endpoints(
    machine_env: dict[str, str], tmp_path: Path
) -> None:
    relay, log, health_port = _start_worker(machine_env, tmp_path, "relay")
    try:
        alive = _wait_alive(relay, log, f"http://127.0.0.1:{health_port}/healthz")
        assert alive["components"] == {"relay": "running", "health": "running"}
        deadline = time.monotonic() + 30
        while True:
            status, ready = _get(f"http://127.0.0.1:{health_port}/readyz")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert status == 200, ready
        assert set(ready["checks"]) == {"database", "nats", "relay", "components"}
    finally:
        assert _stop(relay, signal.SIGTERM, log) == 0, log.read_text()


def test_a_projector_keeps_the_read_models_it_is_given(
    machine_env: dict[str, str], tmp_path: Path
) -> None:
    """`linjerum projector --read-models A,B` keeps those and answers for their lag alone, so
    read models can be spread over processes; a name that is no read model is refused."""
    refused = subprocess.run(
        [*LINJERUM, "projector", "--read-models", "tickets,seats"],
        env=machine_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "not read models: seats; the read models are catalog, availability" in refused.stderr
    projector, log, health_port = _start_worker(
        machine_env, tmp_path, "projector", "--read-models", "availability,tickets"
    )
    try:
        alive = _wait_alive(projector, log, f"http://127.0.0.1:{health_port}/healthz")
        assert alive["components"] == {"projector": "running", "health": "running"}
        _, ready = _get(f"http://127.0.0.1:{health_port}/readyz")
        kept = {name for name in ready["checks"] if name.startswith("projection:")}
        assert kept == {"projection:availability", "projection:tickets"}
    finally:
        assert _stop(projector, signal.SIGTERM, log) == 0, log.read_text()


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.timeout(240)
def test_run_restarts_a_killed_component_process_and_logs_one_json_stream(
    machine_env: dict[str, str], tmp_path: Path
) -> None:
    port, stripe_port = _free_port(), _free_port()
    env = machine_env | {"STRIPE_SIM_PORT": str(stripe_port), "LINJERUM_LOG_LEVEL": "info"}
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    run = subprocess.Popen(
        [*LINJERUM, "--data-dir", str(tmp_path / "d"), "run", "--port", str(port)],
        stdout=out.open("w"),
        stderr=err.open("w"),
        env=env,
        start_new_session=True,
    )
    try:
        _wait_alive(run, err, f"http://127.0.0.1:{port}/healthz")
        first = _children(run.pid)
        assert set(first) == GROUPS
        token = out.read_text().split("demo API key (det-ny-teater): ")[1].split()[0]
        assert _buy_and_pay(port, stripe_port, token)["paid_at"]

        projectors = len(all_projections())
        _wait_for(lambda: len(_started_projectors(err)) == projectors, "projectors never started")
        os.kill(first["relay+projector"], signal.SIGKILL)
        _wait_for(
            lambda: len(_started_projectors(err)) == 2 * projectors,
            "the killed process's projectors were not started again",
            timeout=90,
        )
        # The run sells on, and its health names the new process running.
        assert _buy_and_pay(port, stripe_port, token)["paid_at"]
        _, alive = _get(f"http://127.0.0.1:{port}/healthz")
        assert alive["components"]["process:relay+projector"] == "running"
    finally:
        code = _stop(run, signal.SIGINT, err)
    assert code == 130, err.read_text()[-3000:]
    children = set(first.values()) | set(_children_seen(err))
    assert not any(_alive(pid) for pid in children), "a component outlived Ctrl-C"
    assert _port_free(port)

    lines = [json.loads(line) for line in err.read_text().splitlines()]
    exited = [line for line in lines if line["event"] == "process_exited"]
    assert [(e["child"], e["status"]) for e in exited] == [("relay+projector", -9)]
    assert {line["process"] for line in _started_projectors(err)} == {"relay+projector"}


def _started_projectors(err: Path) -> list[dict]:
    """The projectors' start lines (at info) in a run's log."""
    lines = err.read_text().splitlines()
    return [json.loads(line) for line in lines if '"projector_started"' in line]


def _children_seen(err: Path) -> list[int]:
    """Every component process the run said it started (the restarted one too)."""
    lines = [json.loads(line) for line in err.read_text().splitlines()]
    return [line["pid"] for line in lines if line["event"] == "process_started"]


@pytest.mark.timeout(120)
def test_components_stop_when_the_run_is_killed(
    machine_env: dict[str, str], tmp_path: Path
) -> None:
    port = _free_port()
    env = machine_env | {"STRIPE_SIM_PORT": str(_free_port())}
    log = tmp_path / "run.log"
    run = _start(
        env, log, "run", "--no-seed", "--data-dir", str(tmp_path / "d"), "--port", str(port)
    )
    try:
        _wait_alive(run, log, f"http://127.0.0.1:{port}/healthz")
        children = _children(run.pid)
        assert set(children) == GROUPS
    finally:
        run.kill()
        run.wait(10)
    _wait_for(
        lambda: not any(_alive(pid) for pid in children.values()),
        "a component outlived the killed run",
    )
    _wait_for(lambda: _port_free(port), "the gateway's port stayed taken")


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--port", "0"),
        ("run", "--port", "99999"),
        ("gateway", "--port", "-1"),
        ("keys", "create", "--org", "x", "--name", "n", "--rate-limit", "2147483648"),
        ("keys", "revoke", "99999999999999999999"),
        ("audit", "--key", "99999999999999999999"),
        ("activity", "--org", "x", "--limit", "9223372036854775808"),
    ],
)
def test_a_number_out_of_range_is_a_usage_error_not_a_traceback(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Each reached the database or the socket and ended in a traceback; a port 0 was printed
    as the service's address and given to the simulator as the webhooks' port."""
    refused = _cli(tmp_path, *args)
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("linjerum ")


def test_a_host_not_of_this_machine_is_named_not_a_port_in_use(
    machine_env: dict[str, str], tmp_path: Path
) -> None:
    env = machine_env | {"STRIPE_SIM_PORT": str(_free_port())}
    port = _free_port()
    refused = _cli(tmp_path, "run", "--host", "10.255.1.2", "--port", str(port), env=env)
    assert refused.returncode == 1, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert f"cannot listen on 10.255.1.2 port {port}" in line and "in use" not in line


def test_a_stripe_simulator_whose_port_is_taken_says_so(tmp_path: Path) -> None:
    """It printed its address as if it ran, then blamed PostgreSQL for the taken port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = _cli(tmp_path, "stripe-sim", env=_env() | {"STRIPE_SIM_PORT": str(port)})
    assert refused.returncode == 1, refused.stderr
    assert refused.stdout == ""
    (line,) = refused.stderr.strip().splitlines()
    assert f"port {port} (Stripe simulator)" in line and "postgres" not in line
