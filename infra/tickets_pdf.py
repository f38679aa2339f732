"""Ticket PDFs: one A6-landscape page (148 × 105 mm, a printable stub that also reads well on a
phone) per ticket, with the scan code as a vector QR code, and merging of per-ticket PDFs into
one document per purchase.

Text that Windows-1252 holds (most tickets: Danish and other Western names) is set in the PDF core
fonts (Helvetica, Courier), the WinAnsiEncoding they are declared with: no font file to load or
embed keeps rendering fast and the output small. Any other text (Greek, Cyrillic, Hebrew, Arabic,
CJK, Polish, ...) is set in DejaVu Sans, with WenQuanYi Micro Hei as the fallback for the CJK
characters DejaVu lacks, both shipped in infra/fonts/ and loaded only by a document that needs
them; right-to-left and joined scripts are shaped with HarfBuzz. A character no font has (an
emoji) prints as the font's empty-box glyph and still extracts as itself. The QR code is vector
art, sharp at any zoom: filled rectangles, one per run of dark modules stacked over identical runs
below it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import zxingcpp
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import CoreFont

ENCODING = "windows-1252"
PAGE_W, PAGE_H = 148.0, 105.0
MARGIN = 8.0
HEADER_H = 14.0
QR_SIZE = 44.0  # mm with the quiet zone; a version-3 symbol itself is 34.5 mm
QR_BORDER = 4  # modules of quiet zone, the minimum the QR specification asks for
QR_X = PAGE_W - MARGIN - QR_SIZE
QR_Y = HEADER_H + 6.0
TEXT_W = QR_X - MARGIN - 4.0
TITLE_SIZES = (16, 14, 12, 10, 8)
TITLE_MAX_LINES = 3
MIN_LINE_SIZE = 6.0
LINE_MM_PER_PT = 0.45  # line height: about 1.28 times the font size
ELLIPSIS = "…"
FONT_DIR = Path(__file__).parent / "fonts"
UNICODE_FONT = "dejavu"  # fpdf2 lower-cases family names
UNICODE_FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}
CJK_FONT = "wqy"
CJK_FONT_FILE = "wqy-microhei.ttc"
SHAPED_BIDI_CLASSES = frozenset({"R", "AL", "AN"})
GREY = (90, 90, 90)
BLACK = (0, 0, 0)
DARK_AS_ONE = bytes([1] + [0] * 255)  # zxing-cpp's image: 0 is a dark module, 255 a light one
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class TicketPage(msgspec.Struct, frozen=True, kw_only=True):
    """Everything printed on one ticket page; times are UTC-aware and printed in timezone_name."""

    organization_name: str
    organization_color: str
    product_name: str
    starts_at: datetime | None
    doors_open: datetime | None
    visit_date: date | None
    venue_name: str
    venue_address: str | None
    section_name: str | None
    row: str | None
    seat_number: int | None
    holder_name: str | None
    ticket_type_name: str
    price_cents: int
    currency: str
    ticket_code: str
    scan_code: str
    timezone_name: str = "Europe/Copenhagen"


def render_tickets(pages: Sequence[TicketPage]) -> bytes:
    """One PDF with a page per ticket, in the order given."""
    if not pages:
        raise ValueError("a ticket PDF needs at least one ticket")
    pdf = FPDF(orientation="L", unit="mm", format=(PAGE_H, PAGE_W))
    pdf.core_fonts_encoding = ENCODING
    pdf.set_auto_page_break(False)
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    for page in pages:
        _render_page(pdf, page)
    return bytes(pdf.output())


# --- formatting -----------------------------------------------------------------------------------


def format_money(cents: int, currency: str) -> str:
    """Danish style, as the tickets are sold: 1.250,00 DKK."""
    units, rest = divmod(abs(cents), 100)
    sign = "-" if cents < 0 else ""
    return f"{sign}{units:,}".replace(",", ".") + f",{rest:02d} {currency}"


def _day(value: date) -> str:
    """Locale-independent, so the output does not depend on the server's LANG."""
    return f"{WEEKDAYS[value.weekday()]} {value.day} {MONTHS[value.month - 1]} {value.year}"


def when_lines(page: TicketPage) -> list[str]:
    """The date lines: an event's start and doors in local time with the zone's abbreviation, or
    an attraction's visit date."""
    if page.starts_at is None:
        return [f"Visit date: {_day(page.visit_date)}"] if page.visit_date else []
    zone = ZoneInfo(page.timezone_name)
    start = page.starts_at.astimezone(zone)
    lines = [f"{_day(start)} · {start:%H:%M} {start.tzname()}"]
    if page.doors_open is not None:
        lines.append(f"Doors open {page.doors_open.astimezone(zone):%H:%M}")
    return lines


def place_line(page: TicketPage) -> str:
    """Section, row and seat; a ticket without a seat number is general admission."""
    if page.seat_number is None:
        parts = [page.section_name, "General admission"]
    else:
        parts = [page.section_name, f"Row {page.row}" if page.row else None]
        parts.append(f"Seat {page.seat_number}")
    return " · ".join(part for part in parts if part)


def _core_encodable(text: str) -> bool:
    """Whether the core fonts can print the text as it is."""
    try:
        text.encode(ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def _needs_shaping(text: str) -> bool:
    """Right-to-left letters (Hebrew, Arabic: reordered, Arabic also joined) or combining marks
    need HarfBuzz; other text is printed glyph by glyph, which is faster."""
    return any(
        unicodedata.bidirectional(char) in SHAPED_BIDI_CLASSES or unicodedata.combining(char)
        for char in text
    )


def _set_font(pdf: FPDF, text: str, family: str, style: str, size: float) -> None:
    """The core font `family` when it can print the text, else the shipped Unicode fonts,
    loaded into this document on first use (the CJK one only for characters DejaVu lacks)."""
    if _core_encodable(text):
        if pdf.text_shaping:
            pdf.set_text_shaping(False)
        pdf.set_font(family, style, size)
        return
    if UNICODE_FONT not in pdf.fonts:
        for font_style, file_name in UNICODE_FONT_FILES.items():
            pdf.add_font(UNICODE_FONT, font_style, FONT_DIR / file_name)
    covered = pdf.fonts[UNICODE_FONT].cmap
    if CJK_FONT not in pdf.fonts and any(ord(char) not in covered for char in text):
        pdf.add_font(CJK_FONT, "", FONT_DIR / CJK_FONT_FILE)
        pdf.set_fallback_fonts([CJK_FONT], exact_match=False)
    shaping = _needs_shaping(text)
    if bool(pdf.text_shaping) != shaping:
        pdf.set_text_shaping(shaping)
    pdf.set_font(UNICODE_FONT, style, size)


def _rgb(color: str) -> tuple[int, int, int]:
    """#RRGGBB (validated by the catalog) as a colour triple."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _contrasting(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light organization colours, white on dark ones (ITU-R BT.601 luma)."""
    red, green, blue = rgb
    return BLACK if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)


# --- drawing --------------------------------------------------------------------------------------


def _render_page(pdf: FPDF, page: TicketPage) -> None:
    pdf.add_page()
    _header(pdf, page)
    pdf.set_xy(MARGIN, QR_Y)
    _title(pdf, page.product_name)
    pdf.set_y(pdf.get_y() + 1.5)
    for line in when_lines(page):
        _line(pdf, line, 10, "B")
    pdf.set_y(pdf.get_y() + 1.5)
    _line(pdf, page.venue_name, 10, "B")
    if page.venue_address:
        _line(pdf, page.venue_address, 8, color=GREY)
    pdf.set_y(pdf.get_y() + 1.5)
    _line(pdf, place_line(page), 12, "B")
    if page.holder_name:
        _line(pdf, f"Name: {page.holder_name}", 10)
    _line(pdf, f"{page.ticket_type_name} · {format_money(page.price_cents, page.currency)}", 10)
    _qr(pdf, page.scan_code, QR_X, QR_Y)
    _ticket_code(pdf, page.ticket_code)
    _footer(pdf, page)


def _header(pdf: FPDF, page: TicketPage) -> None:
    rgb = _rgb(page.organization_color)
    pdf.set_fill_color(*rgb)
    pdf.rect(0, 0, PAGE_W, HEADER_H, style="F")
    pdf.set_text_color(*_contrasting(rgb))
    _set_font(pdf, page.organization_name, "Helvetica", "B", 12)
    pdf.set_xy(MARGIN, 0)
    _print(
        pdf, PAGE_W - 2 * MARGIN, HEADER_H, _fit(pdf, page.organization_name, PAGE_W - 2 * MARGIN)
    )
    pdf.set_text_color(*BLACK)


def _title(pdf: FPDF, text: str) -> None:
    """The product name in the largest size that fits three lines (or wrapped at the smallest):
    names run to 200 characters and must stay whole, as buyers and text extraction look for them."""
    for size in TITLE_SIZES:
        _set_font(pdf, text, "Helvetica", "B", size)
        if _width(pdf, text) <= TEXT_W:
            break
        lines = pdf.multi_cell(TEXT_W, size * LINE_MM_PER_PT, text, dry_run=True, output="LINES")
        if len(lines) <= TITLE_MAX_LINES:
            break
    height = pdf.font_size_pt * LINE_MM_PER_PT
    if _width(pdf, text) <= TEXT_W:
        _print(pdf, TEXT_W, height, text, next_line=True)
    else:
        pdf.multi_cell(TEXT_W, height, text, align="L")


def _line(
    pdf: FPDF, text: str, size: float, style: str = "", color: tuple[int, int, int] = BLACK
) -> None:
    """One line of the text column, shrunk (and if need be shortened) to stay clear of the QR."""
    _set_font(pdf, text, "Helvetica", style, size)
    width = _width(pdf, text)
    while width > TEXT_W and size > MIN_LINE_SIZE:
        size -= 1
        pdf.set_font_size(size)
        width = _width(pdf, text)
    pdf.set_text_color(*color)
    pdf.set_x(MARGIN)
    text = _fit(pdf, text, TEXT_W) if width > TEXT_W else text
    _print(pdf, TEXT_W, size * LINE_MM_PER_PT, text, next_line=True)
    pdf.set_text_color(*BLACK)


def _print(
    pdf: FPDF,
    width: float,
    height: float,
    text: str,
    *,
    centered: bool = False,
    next_line: bool = False,
) -> None:
    """One line of text where cell(width, height) prints it, then on to the cell's right or
    (`next_line`) the next line. Text in a core font is written with text() at cell()'s
    baseline, without cell()'s fragments and line breaking (a third of a page's rendering);
    other text goes through cell(), for its fallback fonts and shaping."""
    if not isinstance(pdf.current_font, CoreFont):
        pdf.cell(
            width,
            height,
            text,
            align="C" if centered else "L",
            new_x=XPos.LMARGIN if next_line else XPos.RIGHT,
            new_y=YPos.NEXT if next_line else YPos.TOP,
        )
        return
    x, y = pdf.get_x(), pdf.get_y()
    offset = (width - _width(pdf, text)) / 2 if centered else pdf.c_margin
    pdf.text(x + offset, y + 0.5 * height + 0.3 * pdf.font_size, text)
    if next_line:
        pdf.set_xy(pdf.l_margin, y + height)
    else:
        pdf.set_xy(x + width, y)


def _width(pdf: FPDF, text: str) -> float:
    """get_string_width(), straight from the metrics for a core font: without its fragments
    (it was an eighth of a page's rendering)."""
    font = pdf.current_font
    if isinstance(font, CoreFont):
        return font.get_text_width(pdf.normalize_text(text), pdf.font_size_pt, None)[1] / pdf.k
    return pdf.get_string_width(text)


def _fit(pdf: FPDF, text: str, width: float) -> str:
    """Text cut to width in the current font, with an ellipsis where it was cut."""
    if _width(pdf, text) <= width:
        return text
    while text and _width(pdf, text + ELLIPSIS) > width:
        text = text[:-1]
    return text.rstrip() + ELLIPSIS


def _ticket_code(pdf: FPDF, code: str) -> None:
    _set_font(pdf, code, "Courier", "B", 10)
    pdf.set_xy(QR_X, QR_Y + QR_SIZE)
    _print(pdf, QR_SIZE, 5, _fit(pdf, code, QR_SIZE), centered=True)


def _footer(pdf: FPDF, page: TicketPage) -> None:
    note = "Show the QR code at the entrance. One admission per ticket."
    if page.starts_at is not None:
        note += f" Times are {page.timezone_name} time."
    _set_font(pdf, note, "Helvetica", "", 7)
    pdf.set_text_color(*GREY)
    pdf.set_xy(MARGIN, PAGE_H - MARGIN - 3)
    _print(pdf, PAGE_W - 2 * MARGIN, 3, _fit(pdf, note, PAGE_W - 2 * MARGIN))
    pdf.set_text_color(*BLACK)


def _qr(pdf: FPDF, content: str, x: float, y: float) -> None:
    """The scan code as a regular QR code (never Micro QR, which phone and gate scanners often
    cannot read) inside a four-module quiet zone, drawn as filled rectangles."""
    matrix = qr_matrix(content)
    module = QR_SIZE / (len(matrix) + 2 * QR_BORDER)
    left, top = x + QR_BORDER * module, y + QR_BORDER * module
    pdf.set_fill_color(*BLACK)
    # One path of rectangles in module units (a transformation maps them onto the page, y
    # downwards as fpdf2 draws), filled once: a rect() call per rectangle, each with its
    # coordinates formatted, was a sixth of a page's rendering.
    step = module * pdf.k
    path = " ".join(f"{c} {r} {w} {h} re" for c, r, w, h in dark_rectangles(matrix))
    pdf._out(f"q {step:.4f} 0 0 {-step:.4f} {left * pdf.k:.2f} {(pdf.h - top) * pdf.k:.2f} cm")
    pdf._out(f"{path} f Q")


def qr_matrix(content: str) -> list[bytes]:
    """The rows of a QR code at error level M, 1 for a dark module, without its quiet zone.
    zxing-cpp's native encoder chooses the mask as the specification says, 25 times faster
    than segno's pure Python, whose choice was 40 % of a page's rendering."""
    symbol = zxingcpp.create_barcode(content, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    image = memoryview(symbol.to_image(scale=1, add_quiet_zones=False))
    size = image.shape[0]
    modules = image.tobytes().translate(DARK_AS_ONE)
    return [modules[start : start + size] for start in range(0, size * size, size)]


def dark_rectangles(matrix: Sequence[bytes | bytearray]) -> list[tuple[int, int, int, int]]:
    """(column, row, width, height) in modules of rectangles covering exactly the dark modules:
    each horizontal run, stacked with the identical runs of the rows below it, so a QR code costs
    a couple of hundred drawing operations rather than one per module."""
    done: list[tuple[int, int, int, int]] = []
    open_since: dict[tuple[int, int], int] = {}  # (column, width) -> first row
    for row_index, row in enumerate(matrix):
        runs = dark_runs(row)
        for run in [run for run in open_since if run not in runs]:
            first = open_since.pop(run)
            done.append((run[0], first, run[1], row_index - first))
        for run in runs:
            open_since.setdefault(run, row_index)
    height = len(matrix)
    done.extend(
        (column, first, width, height - first) for (column, width), first in open_since.items()
    )
    return done


def dark_runs(row: bytes | bytearray) -> list[tuple[int, int]]:
    """(column, width) of each run of dark (1) modules in one row of a QR matrix."""
    runs: list[tuple[int, int]] = []
    start = row.find(1)
    while start != -1:
        end = row.find(0, start)
        end = len(row) if end == -1 else end
        runs.append((start, end - start))
        start = row.find(1, end)
    return runs
