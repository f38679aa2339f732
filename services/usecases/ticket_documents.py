"""What a buyer receives: ticket PDFs (one page per ticket, the QR encoding the code the gates
scan) and the confirmation e-mail with the access code, attendee links and the PDF attached;
and what the recipient of a transfer receives: the offer with the token to answer it, and once
accepted, their ticket."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from email.message import EmailMessage

import asyncpg

from domain import tickets
from domain.errors import DomainError
from domain.purchasing import PurchasedTicket, PurchaseState
from domain.tickets import TicketState, TicketWasRefunded
from domain.transfers import TicketAlreadyTransferred, TransferOffered
from infra.mail import build_confirmation
from infra.mail_outbox import TRANSFER_KINDS
from infra.metrics import PDF_RENDER
from infra.tickets_pdf import TicketPage, format_money, render_tickets
from services.usecases.catalog_cache import Catalog
from services.usecases.ticketing import load_purchase, load_ticket, load_tickets
from services.usecases.transfers import load_transfer

RENDERED_BYTES_KEPT = 32 * 1024 * 1024  # about 1,000 20-ticket documents
# A message's subject, its text's lines and its attachments (name, bytes, media type).
Message = tuple[str, list[str], list[tuple[str, bytes, str]]]


class RenderedDocuments:
    """Rendered PDFs by their pages, least recently used dropped past `max_bytes`, with one
    render in flight per key however many requests ask for it at once (64 buyers' partner
    backends fetching one purchase's tickets render them once)."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._kept: OrderedDict[tuple[TicketPage, ...], bytes] = OrderedDict()
        self._in_flight: dict[tuple[TicketPage, ...], asyncio.Future[bytes]] = {}

    async def get(
        self, key: tuple[TicketPage, ...], render: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            return kept
        flight = self._in_flight.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._render(key, render))
            self._in_flight[key] = flight
        # A waiter that goes away (its client hung up) leaves the render to the others.
        return await asyncio.shield(flight)

    async def _render(
        self, key: tuple[TicketPage, ...], render: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        try:
            pdf = await render()
        finally:
            del self._in_flight[key]
        self._kept[key] = pdf
        self._bytes += len(pdf)
        while self._bytes > self._max_bytes and len(self._kept) > 1:
            self._bytes -= len(self._kept.popitem(last=False)[1])
        return pdf


class Documents:
    """Rendering runs in `renderer` (a process pool in production), never on the event loop:
    a 20-ticket PDF is tens of milliseconds of CPU, and the gateway serving it also serves the
    gates' scans. Without one it runs in the loop's default thread pool."""

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
        self._rendered: RenderedDocuments = RenderedDocuments(RENDERED_BYTES_KEPT)

    async def pages(
        self,
        purchase: PurchaseState,
        only: list[PurchasedTicket] | None = None,
        *,
        refunded_too: bool = False,
        as_bought: bool = False,
    ) -> list[TicketPage]:
        """One page per ticket, with the holder as the ticket's own stream has it now.
        `refunded_too`: describe refunded tickets as well (a wallet pass voiding one).
        `as_bought`: the buyer's tickets, as the partner's purchase routes hand them out: one
        passed on is its new holder's, under a code the buyer must not hold (as the
        confirmation e-mail leaves it out), so it is refused or left out as a refunded one is."""
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
        # A ticket handed out no more: asked for, refused; in its purchase's PDF, left out.
        rules: list[tuple[Callable[[TicketState | None], bool], type[DomainError], str]] = []
        if as_bought:
            rules.append((_passed_on, TicketAlreadyTransferred, "was passed on"))
        if not refunded_too:
            rules.append((_refunded, TicketWasRefunded, "is refunded"))
        for gone, refusal, why in rules:
            left_out = [t for t in chosen if gone(loaded[t.id][0])]
            if left_out and (only is not None or len(left_out) == len(chosen)):
                raise refusal(f"ticket {left_out[0].id} {why}")
            chosen = [t for t in chosen if t not in left_out]
        now = datetime.now(UTC)
        for bought in chosen:
            state = loaded[bought.id][0]
            if state is not None:
                tickets.require_fulfilled(state, now)
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
                    ticket_code=_code(state, bought),
                    scan_code=_code(state, bought),
                )
            )
        return pages

    async def holds_any(self, purchase: PurchaseState) -> bool:
        """Whether the buyer still holds a ticket of the purchase: what an e-mail would carry."""
        bought = purchase.opened.tickets
        return bool(_held(bought, await load_tickets(self._pool, [t.id for t in bought])))

    async def pdf(
        self,
        purchase: PurchaseState,
        only: list[PurchasedTicket] | None = None,
        *,
        as_bought: bool = False,
    ) -> bytes:
        """The tickets' pages as one PDF. A document is rendered once per content (the key is
        every printed field of every page, so a transfer, a new holder or a refund makes a new
        one) and kept; requests for a document being rendered wait for that render."""
        key = tuple(await self.pages(purchase, only, as_bought=as_bought))
        return await self._rendered.get(key, lambda: self._render(list(key)))

    async def _render(self, pages: list[TicketPage]) -> bytes:
        """The pages in the renderer, timed for /metrics with the wait for a free render
        worker, which is what a buyer waits for too."""
        with PDF_RENDER.labels("render_tickets").time():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._renderer, render_tickets, pages)

    async def confirmation(self, purchase_token: str, kind: str) -> EmailMessage | None:
        """The mailer's compose step: None (nothing to send) unless the purchase is paid."""
        purchase = await load_purchase(self._pool, purchase_token)
        if purchase is None or purchase.status != "paid":
            return None
        opened = purchase.opened
        org = await self._catalog.organization(opened.organization_id)
        loaded = await load_tickets(self._pool, [t.id for t in opened.tickets])
        held = _held(opened.tickets, loaded)
        if not held:
            return None
        links = [
            f"- {t.ticket_type_name}{_seat_text(t)}: "
            + self._attendee_link.format(token=t.attendee_token)
            for t in held
        ]
        # What was charged, and what of it was given back: "paid in total" once said the rest
        # after refunds, far below the charge on the buyer's card.
        currency = opened.pricing.currency
        total = format_money(opened.pricing.total_cents, currency)
        if purchase.refunded_cents:
            total += f", heraf refunderet {format_money(purchase.refunded_cents, currency)}"
        now = datetime.now(UTC)
        early = [s.issued.terms.fulfillment_starts_at for s, _ in loaded.values() if s is not None]
        handed_out_from = max((at for at in early if at is not None and at > now), default=None)
        text = "\n".join(
            [
                f"Tak for dit køb hos {org.name}!",
                "",
                f"{opened.product_name}: {len(held)} billet(ter), betalt i alt {total}.",
                f"Din adgangskode: {opened.access_code} (brug den med din e-mail for at se"
                " og rette dine billetter).",
                "",
                "Link til hver plads (send dem videre til dine gæster):",
                *links,
                "",
                "Billetterne er vedhæftet som PDF."
                if handed_out_from is None
                else "Billetterne udleveres fra "
                f"{handed_out_from:%Y-%m-%d %H:%M} UTC via linkene ovenfor.",
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
            attachments=[]
            if handed_out_from is not None
            else [("billetter.pdf", await self.pdf(purchase, held), "application/pdf")],
        )

    async def refund_message(self, purchase_token: str) -> EmailMessage | None:
        """To the buyer: what has been refunded of their purchase (or a payment that came too
        late given back, with no tickets). Each refund queues one
        (the outbox folds by refund); each tells every refund so far, so two refunds queued
        before the first message goes out are both told, never one twice as the only news."""
        purchase = await load_purchase(self._pool, purchase_token)
        if purchase is None or (purchase.refunded_cents == 0 and not purchase.refunded_tickets):
            return None
        opened = purchase.opened
        org = await self._catalog.organization(opened.organization_id)
        gone = [t for t in opened.tickets if t.id in purchase.refunded_tickets]
        total = format_money(purchase.refunded_cents, opened.pricing.currency)
        text = [
            f"{org.name} har i alt refunderet {total} af dit køb til {opened.product_name}"
            f" (adgangskode {opened.access_code}).",
            "Pengene går tilbage til det kort, du betalte med; det kan tage nogle dage.",
        ]
        if purchase.refund_decision is not None:  # a late payment, given back whole
            text.insert(
                1,
                "Betalingen nåede frem, efter at købet var udløbet eller annulleret, og"
                " pladserne var solgt til andre; du har ingen billetter fra dette køb.",
            )
        if gone:
            text += [
                "",
                "Disse billetter er refunderet og kan ikke længere bruges:",
                *(f"- {t.ticket_type_name}{_seat_text(t)}" for t in gone),
            ]
        return build_confirmation(
            to=opened.buyer.email,
            sender=self._sender,
            subject=f"Refusion af dit køb til {opened.product_name}",
            text="\n".join(text),
            html=None,
            attachments=[],
        )

    async def compose(self, key: str, kind: str) -> EmailMessage | None:
        """The mailer's compose step for every kind of message: `key` is the purchase's token,
        or for a transfer's messages the transfer's id."""
        if kind == "refund":
            return await self.refund_message(key)
        if kind in TRANSFER_KINDS:
            return await self.transfer_message(key, kind)
        return await self.confirmation(key, kind)

    async def transfer_message(self, transfer_id: str, kind: str) -> EmailMessage | None:
        """To the recipient: the offer while it is open, their ticket once they accepted it;
        None (nothing to send) once the transfer is past that."""
        transfer, _ = await load_transfer(self._pool, transfer_id)
        if transfer is None:
            return None
        status = transfer.status(datetime.now(UTC))
        message: Message | None = None
        if (kind, status) == ("transfer_offer", "offered"):
            message = await self._transfer_offer(transfer.offered)
        elif (kind, status) == ("transfer_completed", "accepted"):
            message = await self._transferred_ticket(transfer.offered)
        if message is None:
            return None
        subject, text, attachments = message
        return build_confirmation(
            to=transfer.offered.recipient.email,
            sender=self._sender,
            subject=subject,
            text="\n".join(text),
            html=None,
            attachments=attachments,
        )

    async def _transfer_offer(self, offered: TransferOffered) -> Message:
        org = await self._catalog.organization(offered.organization_id)
        ticket, _ = await load_ticket(self._pool, offered.ticket_id)
        assert ticket is not None
        product = ticket.issued.product_name
        text = [
            f"Hej {offered.recipient.name}!",
            "",
            f"Du får tilbudt en billet til {product} hos {org.name}.",
            f"Svar senest {offered.deadline:%Y-%m-%d %H:%M} UTC, ellers bortfalder tilbuddet.",
            "",
            f"Overdragelse: {offered.transfer_id}",
            f"Din kode: {offered.token}",
            "",
            f"Tag imod: POST /api/v1/transfers/{offered.transfer_id}/accept",
            f"Sig nej tak: POST /api/v1/transfers/{offered.transfer_id}/decline",
            'med {"token": "<din kode>"}.',
        ]
        return f"En billet til {product} til dig", text, []

    async def _transferred_ticket(self, offered: TransferOffered) -> Message | None:
        """The ticket for its new holder: its PDF once fulfillment has started, else when it
        will be handed out (as the buyer's confirmation says); none for a ticket refunded
        since."""
        org = await self._catalog.organization(offered.organization_id)
        ticket, _ = await load_ticket(self._pool, offered.ticket_id)
        purchase = await load_purchase(self._pool, offered.purchase_token)
        assert ticket is not None and purchase is not None
        if _refunded(ticket):
            return None
        product = ticket.issued.product_name
        text = [
            f"Hej {offered.recipient.name}!",
            "",
            f"Billetten til {product} hos {org.name} er nu din, med en ny kode: {ticket.code}.",
            "Din billet: " + self._attendee_link.format(token=ticket.attendee_token),
            "",
        ]
        subject = f"Din billet til {product}"
        if not tickets.handed_out(ticket, datetime.now(UTC)):
            starts = ticket.issued.terms.fulfillment_starts_at
            assert starts is not None
            return (
                subject,
                [*text, f"Billetten udleveres fra {starts:%Y-%m-%d %H:%M} UTC via linket ovenfor."],
                [],
            )
        bought = [t for t in purchase.opened.tickets if t.id == offered.ticket_id]
        pdf = await self.pdf(purchase, bought)
        text.append("Billetten er vedhæftet som PDF.")
        return subject, text, [("billet.pdf", pdf, "application/pdf")]


def _held(
    bought: list[PurchasedTicket], loaded: dict[int, tuple[TicketState | None, int]]
) -> list[PurchasedTicket]:
    """The tickets the buyer still holds: one passed on is its new holder's (its link and page
    go to them), one refunded no one's."""
    return [t for t in bought if not _passed_on(loaded[t.id][0]) and not _refunded(loaded[t.id][0])]


def _refunded(state: TicketState | None) -> bool:
    return state is not None and state.refunded_by is not None


def _passed_on(state: TicketState | None) -> bool:
    return state is not None and state.transfers > 0


def _code(state: TicketState | None, bought: PurchasedTicket) -> str:
    """The code the ticket has now: a transferred ticket's PDF shows its new one."""
    return state.code if state is not None else bought.code


def _holder(state: TicketState | None, bought: PurchasedTicket) -> str | None:
    return state.holder_name if state is not None else bought.name


def _seat_text(ticket: PurchasedTicket) -> str:
    seat = ticket.seat
    return f" (række {seat.row}, plads {seat.seat_number})" if seat else ""
