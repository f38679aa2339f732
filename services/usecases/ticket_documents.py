"""What a buyer receives: ticket PDFs (one page per ticket, the QR encoding the code the gates
scan) and the confirmation e-mail with the access code, attendee links and the PDF attached."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from email.message import EmailMessage
from typing import TypeVar

import asyncpg

from domain.purchasing import PurchasedTicket, PurchaseState
from domain.tickets import TicketState
from infra.mail import build_confirmation
from infra.tickets_pdf import TicketPage, format_money, merge_pdfs, render_tickets
from services.usecases.catalog_cache import Catalog
from services.usecases.ticketing import load_purchase, load_tickets

RENDERED_KEPT = 5000
T = TypeVar("T")


class Documents:
    """Rendering and merging run in `renderer` (a process pool in production), never on the
    event loop: a 20-ticket PDF is a tenth of a second of CPU, and the gateway serving it also
    serves the gates' scans. Without one they run in the loop's default thread pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        catalog: Catalog,
        sender: str,
        attendee_link: str,
        renderer: Executor | None = None,
    ):
        self._pool = pool
        self._catalog = catalog
        self._sender = sender
        self._attendee_link = attendee_link
        self._renderer = renderer
        self._rendered: dict[tuple[str, str | None], bytes] = {}

    async def pages(
        self, purchase: PurchaseState, only: list[PurchasedTicket] | None = None
    ) -> list[TicketPage]:
        """One page per ticket, with the holder as the ticket's own stream has it now."""
        opened = purchase.opened
        org = await self._catalog.organization(opened.organization_id)
        starts = doors = None
        if opened.event_id is not None:
            scheduled = await self._catalog.scheduled(opened.event_id)
            venue = await self._catalog.venue(scheduled.venue_id)
            starts, doors = scheduled.event_date, scheduled.doors_open
        else:
            assert opened.attraction_id is not None
            venue = await self._catalog.venue(
                (await self._catalog.attraction(opened.attraction_id)).venue_id
            )
        sections = {s.id: s.name for s in venue.sections}
        address = ", ".join(p for p in (venue.address, venue.zip_code, venue.city) if p) or None
        pages = []
        chosen = only if only is not None else opened.tickets
        loaded = await load_tickets(self._pool, [t.id for t in chosen])
        for bought in chosen:
            state, _ = loaded[bought.id]
            seat = bought.seat
            pages.append(
                TicketPage(
                    organization_name=org.name,
                    organization_color=org.primary_color,
                    product_name=opened.product_name,
                    starts_at=starts,
                    doors_open=doors,
                    visit_date=opened.visit_date,
                    venue_name=venue.name,
                    venue_address=address,
                    section_name=sections.get(seat.section_id) if seat else None,
                    row=seat.row if seat else None,
                    seat_number=seat.seat_number if seat else None,
                    holder_name=_holder(state, bought),
                    ticket_type_name=bought.ticket_type_name,
                    price_cents=bought.amount_cents,
                    currency=opened.pricing.currency,
                    ticket_code=bought.code,
                    scan_code=bought.code,
                )
            )
        return pages

    async def pdf(
        self, purchase: PurchaseState, only: list[PurchasedTicket] | None = None
    ) -> bytes:
        """Each ticket is rendered once (per holder) and kept; a purchase's PDF is its tickets'
        PDFs merged, so re-downloads and e-mails cost a merge, not a render."""
        pages = await self.pages(purchase, only)
        known = {_key(p): self._rendered[_key(p)] for p in pages if _key(p) in self._rendered}
        missing = {_key(p): p for p in pages if _key(p) not in known}
        rendered = await asyncio.gather(
            *(self._off_loop(render_tickets, [page]) for page in missing.values())
        )
        for key, pdf in zip(missing, rendered, strict=True):
            if len(self._rendered) >= RENDERED_KEPT:
                self._rendered.pop(next(iter(self._rendered)))
            self._rendered[key] = known[key] = pdf
        parts = [known[_key(p)] for p in pages]
        return parts[0] if len(parts) == 1 else await self._off_loop(merge_pdfs, parts)

    async def _off_loop(self, work: Callable[[T], bytes], argument: T) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self._renderer, work, argument)

    async def confirmation(self, purchase_token: str, kind: str) -> EmailMessage | None:
        """The mailer's compose step: None (nothing to send) unless the purchase is paid."""
        purchase = await load_purchase(self._pool, purchase_token)
        if purchase is None or purchase.status != "paid":
            return None
        opened = purchase.opened
        org = await self._catalog.organization(opened.organization_id)
        links = [
            f"- {t.ticket_type_name}{_seat_text(t)}: "
            + self._attendee_link.format(token=t.attendee_token)
            for t in opened.tickets
        ]
        total = format_money(opened.pricing.total_cents, opened.pricing.currency)
        text = "\n".join(
            [
                f"Tak for dit køb hos {org.name}!",
                "",
                f"{opened.product_name}: {len(opened.tickets)} billet(ter), i alt {total}.",
                f"Din adgangskode: {opened.access_code} (brug den med din e-mail for at se"
                " og rette dine billetter).",
                "",
                "Link til hver plads (send dem videre til dine gæster):",
                *links,
                "",
                "Billetterne er vedhæftet som PDF.",
            ]
        )
        subject = f"Dine billetter til {opened.product_name}"
        if kind == "resend":
            subject += " (sendt igen)"
        return build_confirmation(
            to=opened.buyer.email,
            sender=self._sender,
            subject=subject,
            text=text,
            html=None,
            attachments=[("billetter.pdf", await self.pdf(purchase), "application/pdf")],
        )


def _key(page: TicketPage) -> tuple[str, str | None]:
    """A ticket's page changes only with its holder."""
    return (page.ticket_code, page.holder_name)


def _holder(state: TicketState | None, bought: PurchasedTicket) -> str | None:
    return state.holder_name if state is not None else bought.name


def _seat_text(ticket: PurchasedTicket) -> str:
    seat = ticket.seat
    return f" (række {seat.row}, plads {seat.seat_number})" if seat else ""
