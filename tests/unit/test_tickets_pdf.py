"""Ticket PDFs: what a buyer's PDF says, read back as text with pypdf the way a mail client or a
screen reader would, and that its QR code, rasterised and scanned, gives back the scan code."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import segno
from msgspec.structs import replace
from pypdf import PdfReader

from infra.tickets_pdf import (
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
