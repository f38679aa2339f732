"""`linjerum run` on a fresh machine: embedded PostgreSQL and NATS from an empty data folder,
demo data seeded once, CLI commands reaching the running servers, and a clean Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

LINJERUM = [sys.executable, "-m", "services.cli"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    env["LINJERUM_LOG_LEVEL"] = "warning"
    return env


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LINJERUM, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
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

    def call(self, method: str, url: str, token: str | None = None, body: object = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def buy_and_pay(self, token: str) -> dict:
        """The quick start against the running process: buy, pay at the simulator, poll."""
        api = f"http://127.0.0.1:{self.port}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                event = self.call("GET", f"{api}/events/hamlet-2026", token)
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
        created = self.call("POST", f"{api}/purchases", token, order)
        intent = created["payment"]["stripe_payment_intent_id"]
        sim = f"http://127.0.0.1:{self.stripe_port}/_sim/payment_intents/{intent}/succeed"
        self.call("POST", sim, body={})
        token_url = f"{api}/purchases/{created['purchase']['token']}"
        while time.monotonic() < deadline:
            purchase = self.call("GET", token_url, token)["purchase"]
            if purchase["paid_at"]:
                return purchase
            time.sleep(0.1)
        raise AssertionError("the webhook never marked the purchase paid")

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
def test_run_from_an_empty_folder_seeds_once_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    service = Service(data_dir)
    try:
        service.wait_healthy()
        out = service.output.read_text()
        assert "demo API key (det-ny-teater): tk_live_" in out
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
            "https://teaterbilletten.dk",
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
