"""What a process checks before it starts anything: that the ports it will listen on are
free, with a message naming the process that holds one."""

from __future__ import annotations

import errno
import socket

import psutil

from infra.payments import SIMULATOR_HOST
from infra.settings import Settings


class PortInUse(Exception):
    """A port this process must listen on is taken; the message says which and what to do."""


def check_ports(settings: Settings, components: tuple[str, ...], *, simulates: bool = True) -> None:
    """Fail before anything starts (embedded servers, demo data, a printed key) when a port the
    process will listen on is taken, most often by a `linjerum run` already running."""
    wanted: list[tuple[str, str, int, str]] = []
    if "gateway" in components:
        wanted.append(
            ("gateway", settings.http_host, settings.http_port, "--port or LINJERUM_PORT")
        )
        if simulates and settings.starts_simulator:
            wanted.append(
                ("Stripe simulator", SIMULATOR_HOST, settings.stripe_sim_port, "STRIPE_SIM_PORT")
            )
    elif settings.health_port > 0:
        wanted.append(
            (
                "health",
                settings.http_host,
                settings.health_port,
                "--health-port or LINJERUM_HEALTH_PORT",
            )
        )
    if "gateway" not in components and settings.metrics_port not in (0, settings.health_port):
        wanted.append(
            (
                "metrics",
                settings.http_host,
                settings.metrics_port,
                "--metrics-port or LINJERUM_METRICS_PORT",
            )
        )
    for what, host, port, option in wanted:
        check_port(what, host, port, option)


def check_port(what: str, host: str, port: int, option: str) -> None:
    """PortInUse naming `what` and the `option` that moves it when `host`:`port` cannot be
    listened on."""
    refused = _bind_refusal(host, port)
    if refused is None:
        return
    if refused.errno == errno.EADDRINUSE:
        raise PortInUse(
            f"linjerum: port {port} ({what}) on {host} is already in use{_holder(port)};"
            f" stop that process or choose another port ({option})"
        )
    raise PortInUse(
        f"linjerum: cannot listen on {host} port {port} ({what}):"
        f" {refused.strerror or refused}; is {host} an address of this machine?"
    )


def _bind_refusal(host: str, port: int) -> OSError | None:
    """Why `host`:`port` cannot be listened on (the port taken, the address not this
    machine's or no address at all), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None


def _holder(port: int) -> str:
    """ ", by pid N (command line)" for the process listening on `port`, when it can be seen."""
    try:
        listening = [
            c
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
        ]
        if not listening:
            return ""
        pid = listening[0].pid
        command = " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return ""
    return f", by pid {pid} ({command})"
