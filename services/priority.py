"""Scheduling priority by the work a process does. On a machine the sale shares with the
database, the read models' path (relay and projectors) needs little CPU but needs it as soon as
events are stored: behind a busy gateway it waited for its turn, and the read models fell
100-180 ms behind in an on-sale. Work that may wait a few seconds (the mailer's PDFs and
e-mails, the sweeper's expiries, Stripe refunds) yields to both."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

READ_MODELS = frozenset({"relay", "projector"})
DEFERRABLE = frozenset({"sweeper", "mailer", "payments"})
READ_MODELS_NICENESS = -2
DEFERRABLE_NICENESS = 10


def niceness_for(components: Iterable[str]) -> int:
    """A process running only read-model components goes first, one running only deferrable
    ones last; any other mix (a gateway, the single process) keeps the default."""
    running = frozenset(components)
    if running <= READ_MODELS:
        return READ_MODELS_NICENESS
    if running <= DEFERRABLE:
        return DEFERRABLE_NICENESS
    return 0


def take_priority(components: Iterable[str]) -> None:
    """Sets this process's niceness, and its session's when it leads one: with Linux's
    autogroups a session's niceness is what counts against other sessions (each child of
    `linjerum run` has its own). Going first needs CAP_SYS_NICE (root, or `cap_add: SYS_NICE`
    in a container); without it the process keeps the default priority and says so."""
    niceness = niceness_for(components)
    if niceness == 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except PermissionError:
        log.info("priority_not_raised", niceness=niceness, reason="needs CAP_SYS_NICE")
        return
    if os.getsid(0) == os.getpid():
        with contextlib.suppress(OSError):
            Path("/proc/self/autogroup").write_text(str(niceness))
