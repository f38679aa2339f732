"""Ticket PDFs: what a buyer's PDF says, read back as text with pypdf the way a mail client or a
screen reader would, and that its QR code, rasterised and scanned, gives back the scan code."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import segno
from msgspec.structs import replace
from pypdf import PdfReader

from infra.tickets_pdf import (
    RenderWorkers,
    TicketPage,
    dark_rectangles,
    format_money,
    render_tickets,
)
from services.dev.sample_ticket import SEATED_TICKET as SEATED

ATTRACTION = TicketPage(
    organization_name="Den Blå Planet",
    organization_color="#F5E663",
    product_name="Akvariet – dagsbillet",
    starts_at=None,
    doors_open=None,
    visit_date=date(2026, 6, 1),
    venue_name="Den Blå Planet",
    venue_address=None,
    section_name=None,
    row=None,
    seat_number=None,
    holder_name=None,
    ticket_type_name="Barn",
    price_cents=9500,
    currency="DKK",
    ticket_code="LJ-AAAA-BBBB",
    scan_code="https://linjerum.example/t/LJAAAABBBB?sig=0f9c2e",
)


def _pages(pdf: bytes) -> list[str]:
    """Each page's text with whitespace collapsed, as wrapping is layout, not content."""
    return [" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(pdf)).pages]


def test_a_seated_event_ticket_reads_back_as_text() -> None:
    (text,) = _pages(render_tickets([SEATED]))
    for expected in (
        "Aarhus Teater",
        "Hamlet – Prins af Danmark",
        "LJ-7F3K-9Q2X",
        "Søren Ærø Åberg",
        "Parket · Row A · Seat 12",
        "Voksen · 350,00 DKK",
        "Fri 1 May 2026 · 19:00 CEST",  # 17:00 UTC in Copenhagen summer time
        "Doors open 18:15",
        "Store Scene",
        "Teatergaden 1, 8000 Aarhus C",
        "Europe/Copenhagen",
    ):
        assert expected in text
    assert "General admission" not in text


def test_an_attraction_ticket_is_general_admission_on_its_visit_date() -> None:
    (text,) = _pages(render_tickets([ATTRACTION]))
    for expected in ("Akvariet – dagsbillet", "LJ-AAAA-BBBB", "General admission"):
        assert expected in text
    assert "Visit date: Mon 1 Jun 2026" in text
    assert "Doors" not in text and "Seat" not in text


def test_a_winter_event_is_labelled_with_standard_time() -> None:
    winter = replace(SEATED, starts_at=datetime(2026, 12, 4, 18, 30, tzinfo=UTC), doors_open=None)
    (text,) = _pages(render_tickets([winter]))
    assert "Fri 4 Dec 2026 · 19:30 CET" in text


def test_a_long_product_name_is_wrapped_whole() -> None:
    name = " ".join(["Forestilling"] * 16)[:200]
    (text,) = _pages(render_tickets([replace(SEATED, product_name=name)]))
    assert name in text


@pytest.mark.parametrize(
    ("holder", "product", "organization"),
    [
        ("Ελένη Παπαδοπούλου", "Αντιγόνη", "Εθνικό Θέατρο"),  # Greek
        ("Анна Иванова", "Лебединое озеро", "Большой театр"),  # Cyrillic
        ("דוד כהן", "הבימה: המלט", "תיאטרון הבימה"),  # Hebrew, right to left
        ("محمد عبد الله", "ليلة الموسيقى", "دار الأوبرا"),  # Arabic, right to left and joined
        ("山田 太郎", "東京公演", "東京文化会館"),  # Japanese
        ("王小明", "天鹅湖", "国家大剧院"),  # Chinese
        ("김민준", "서울 공연", "세종문화회관"),  # Korean
        ("Łucja Dvořák", "Dziady – część III", "Teatr Wielki"),  # Latin outside Windows-1252
    ],
)
def test_names_in_any_script_print_as_themselves(
    holder: str, product: str, organization: str
) -> None:
    page = replace(SEATED, holder_name=holder, product_name=product, organization_name=organization)
    (text,) = _pages(render_tickets([page]))
    assert f"Name: {holder}" in text
    assert product in text and organization in text
    assert "?" not in text
    assert "Parket · Row A · Seat 12" in text and "LJ-7F3K-9Q2X" in text


def test_mixed_scripts_in_one_name_and_latin_pages_beside_them() -> None:
    """A name mixing scripts needs the fallback font within one line, and a document whose
    other pages are Western still prints those as before."""
    mixed = replace(SEATED, holder_name="Søren Ivanov Иванов 山田 כהן", ticket_code="LJ-MIX")
    texts = _pages(render_tickets([SEATED, mixed]))
    assert "Name: Søren Ærø Åberg" in texts[0]
    assert "Søren Ivanov Иванов 山田" in texts[1] and "כהן" in texts[1]


def test_western_tickets_embed_no_font_file() -> None:
    """The fast path: Windows-1252 text uses the core fonts, nothing is loaded or embedded."""
    assert b"/FontFile2" not in render_tickets([SEATED, ATTRACTION])
    assert b"/FontFile2" in render_tickets([replace(SEATED, holder_name="Анна")])


def test_a_character_no_font_has_still_renders() -> None:
    (text,) = _pages(render_tickets([replace(SEATED, holder_name="Anna 🎭 Ελένη")]))
    assert "Ελένη" in text and "Anna" in text


def test_one_page_per_ticket_in_the_order_given() -> None:
    texts = _pages(render_tickets([SEATED, SEATED, ATTRACTION]))
    assert len(texts) == 3
    assert ["LJ-7F3K-9Q2X" in t for t in texts] == [True, True, False]


def test_an_empty_document_is_refused() -> None:
    with pytest.raises(ValueError):
        render_tickets([])


@pytest.mark.parametrize(
    ("cents", "expected"),
    [(35000, "350,00 DKK"), (125000, "1.250,00 DKK"), (0, "0,00 DKK"), (5, "0,05 DKK")],
)
def test_money_is_printed_the_danish_way(cents: int, expected: str) -> None:
    assert format_money(cents, "DKK") == expected


@pytest.mark.parametrize("content", ["A", "LJ7F3K9Q2XB4M8TW", "x" * 120])
def test_the_qr_rectangles_cover_exactly_the_dark_modules(content: str) -> None:
    matrix = segno.make(content, error="m", micro=False).matrix
    painted = [[0] * len(row) for row in matrix]
    for column, row, width, height in dark_rectangles(matrix):
        for y in range(row, row + height):
            for x in range(column, column + width):
                assert not painted[y][x], "rectangles overlap"
                painted[y][x] = 1
    assert painted == [list(row) for row in matrix]


@pytest.mark.skipif(
    not (shutil.which("pdftoppm") and shutil.which("zbarimg")),
    reason="needs pdftoppm (Debian poppler-utils) and zbarimg (Debian zbar-tools)",
)
def test_each_pages_qr_code_scans_to_its_scan_code(tmp_path: Path) -> None:
    pages = [SEATED, ATTRACTION, replace(SEATED, scan_code="LJ-" + "9" * 60)]
    (tmp_path / "tickets.pdf").write_bytes(render_tickets(pages))
    subprocess.run(
        ["pdftoppm", "-r", "150", "-png", "tickets.pdf", "page"], cwd=tmp_path, check=True
    )
    images = sorted(tmp_path.glob("page-*.png"))
    assert len(images) == len(pages)
    for image, page in zip(images, pages, strict=True):
        scanned = subprocess.run(
            ["zbarimg", "--raw", "-q", str(image)], capture_output=True, text=True, check=True
        )
        assert scanned.stdout.rstrip("\n") == page.scan_code


def test_a_dead_render_worker_is_replaced() -> None:
    """A worker process that dies (here: exits mid-task) breaks its pool for good; the
    service's renderer replaces the pool, so later tickets still render."""
    workers = RenderWorkers(1)
    try:
        assert workers.submit(render_tickets, [SEATED]).result(timeout=60).startswith(b"%PDF")
        with pytest.raises(BrokenProcessPool):
            workers.submit(os._exit, 1).result(timeout=60)
        rendered = None
        for _ in range(3):  # the pool learns of the death on its own thread, a moment later
            try:
                rendered = workers.submit(render_tickets, [SEATED]).result(timeout=60)
                break
            except BrokenProcessPool:
                continue
        assert rendered is not None and rendered.startswith(b"%PDF")
    finally:
        workers.shutdown()


# A service that starts its render workers at start-up, says which processes they are, and
# waits to be killed.
SERVICE = """
import multiprocessing, time
from infra.tickets_pdf import RenderWorkers
workers = RenderWorkers(2)
workers.warm()
print(*[child.pid for child in multiprocessing.active_children()], flush=True)
time.sleep(120)
"""


def _ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def _all_end(pids: list[int], within: float = 30.0) -> bool:
    """Whether every one of `pids` has ended, waiting up to `within` seconds for them."""
    deadline = time.monotonic() + within
    while not all(_ended(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return all(_ended(pid) for pid in pids)


def test_render_workers_start_at_start_up_and_end_with_the_service() -> None:
    """Every worker is running before the first document is asked for (starting one would
    otherwise stall whichever request or e-mail asked first), and a killed service leaves none
    behind: a worker holds both ends of its task queue, so nothing else would end it."""
    root = Path(__file__).resolve().parents[2]
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert service.stdout is not None
        workers = [int(pid) for pid in service.stdout.readline().split()]
        assert len(workers) == 2 and not any(_ended(pid) for pid in workers)
    finally:
        service.kill()
        service.wait()
    assert _all_end(workers)


# A render worker's watch on its service where the kernel has no pidfd (before Linux 5.3).
FOLLOWER = """
import os, sys, time
del os.pidfd_open
from infra.tickets_pdf import _follow
_follow(int(sys.argv[1]))
time.sleep(120)
"""


def test_without_pidfd_a_worker_still_ends_with_its_service() -> None:
    root = Path(__file__).resolve().parents[2]
    service = subprocess.Popen(["sleep", "120"])
    follower = subprocess.Popen([sys.executable, "-c", FOLLOWER, str(service.pid)], cwd=root)
    try:
        service.kill()
        service.wait()
        assert follower.wait(timeout=30) == 0
    finally:
        follower.kill()
        follower.wait()


# A program run as a file whose first lines are the `linjerum` console script's.
PROGRAM = """
import sys
from services.__main__ import main
from infra.tickets_pdf import RenderWorkers

if __name__ == "__main__":
    workers = RenderWorkers(1)
    workers.warm()
    print(workers.submit(eval, "'services.runtime' in __import__('sys').modules").result())
"""


def test_a_render_worker_of_the_linjerum_script_does_not_import_the_service(
    tmp_path: Path,
) -> None:
    """A worker runs its program's main module again before its first task: the console
    script's, services/__main__.py, must not import the whole service (a second of CPU per
    worker, in the sale that asked for the first PDF)."""
    program = tmp_path / "linjerum"
    program.write_text(PROGRAM)
    root = Path(__file__).resolve().parents[2]
    ran = subprocess.run(
        [sys.executable, str(program)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONPATH": str(root)},
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "False"


def test_ctrl_c_on_the_service_prints_no_worker_tracebacks() -> None:
    """A terminal's Ctrl-C reaches the service's whole process group, its workers too: the
    service answers it, and the workers end with it, quietly."""
    root = Path(__file__).resolve().parents[2]
    quiet = SERVICE.replace(
        "time.sleep(120)", "try:\n    time.sleep(120)\nexcept KeyboardInterrupt:\n    pass"
    )
    service = subprocess.Popen(
        [sys.executable, "-c", quiet],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert service.stdout is not None
        workers = [int(pid) for pid in service.stdout.readline().split()]
        os.killpg(service.pid, signal.SIGINT)
        _, errors = service.communicate(timeout=60)
    finally:
        service.kill()
        service.wait()
    assert workers and _all_end(workers)
    assert "Traceback" not in errors, errors
