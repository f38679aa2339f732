"""The command line's argument types: what argparse turns a word into, or refuses in one usage
line (exit 2) before anything reaches a database or a socket."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def since(value: str) -> datetime:
    """--since: an ISO-8601 time (naive means UTC) or a duration back from now."""
    if match := _DURATION.match(value.strip()):
        try:
            return datetime.now(UTC) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{value!r} reaches back before any date") from None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither an ISO-8601 time nor a duration like 15m, 2h, 1d"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def day(value: str) -> date:
    """A date as YYYY-MM-DD."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is no day like 2026-12-24") from None


def integer(lowest: int, highest: int, what: str) -> Callable[[str], int]:
    """An integer from `lowest` to `highest`: what a socket or a database column takes."""

    def within(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = lowest - 1
        if not lowest <= number <= highest:
            raise argparse.ArgumentTypeError(f"{value!r} is not {what} ({lowest}-{highest})")
        return number

    return within


# A worker's health or metrics port: 0 is none.
port = integer(0, 65535, "a port")
# The gateway's port, which the service prints and the simulator's webhooks go to: a port the
# system would choose (0) is known to neither.
listen_port = integer(1, 65535, "a port")
positive = integer(1, 2**63 - 1, "a positive integer")  # a bigint id or limit
rate = integer(1, 2**31 - 1, "a rate")  # an integer column
