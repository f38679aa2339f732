"""Ticket PDF rendering ceiling, in process: single-ticket PDFs/s, 20-ticket PDFs/s (a
purchase's document, one page per ticket), and the QR codes alone, as the PDFs make them
(zxing-cpp) and as the attendee page does (segno).

    .venv/bin/python bench/pdf_render.py --seconds 3

Each measurement runs for about --seconds of wall-clock time and at most --max renders, on one
core. It prints the wall-clock rate and the rate per CPU-second: on a busy machine the second is
the one to trust for what a core can do. Every ticket has a scan code of its own, as in
production, so no QR code is reused.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import segno
from msgspec.structs import replace

from infra.tickets_pdf import TicketPage, qr_matrix, render_tickets
from services.dev.sample_ticket import SEATED_TICKET

TICKETS_PER_PURCHASE = 20
_serial = itertools.count()


def ticket() -> TicketPage:
    """The sample seated ticket in a seat of row C, with a fresh 16-character scan code."""
    number = next(_serial)
    return replace(
        SEATED_TICKET,
        row="C",
        seat_number=number % 30 + 1,
        ticket_code=f"LJ-{number:08X}",
        scan_code=f"LJ{number:014X}",
    )


def measure(label: str, work: Callable[[], object], seconds: float, limit: int) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    count = 0
    while count < limit and time.perf_counter() - wall < seconds:
        work()
        count += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"{label:<34} {count / wall:8.1f}/s wall  {count / cpu:8.1f}/s per CPU-second  (n={count})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max", type=int, default=5000, help="renders per measurement at most")
    args = parser.parse_args()
    render_tickets([ticket()])  # imports and font metrics loaded before the clock starts
    measure("single-ticket PDFs", lambda: render_tickets([ticket()]), args.seconds, args.max)
    measure(
        f"{TICKETS_PER_PURCHASE}-ticket PDFs",
        lambda: render_tickets([ticket() for _ in range(TICKETS_PER_PURCHASE)]),
        args.seconds,
        args.max,
    )
    measure("QR codes, zxing-cpp", lambda: qr_matrix(ticket().scan_code), args.seconds, args.max)
    measure(
        "QR codes, segno",
        lambda: segno.make(ticket().scan_code, error="m", micro=False),
        args.seconds,
        args.max,
    )


if __name__ == "__main__":
    main()
