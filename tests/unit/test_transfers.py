"""Transfers without IO: offering a ticket (every refusal, the deadline and its cap), accepting
it (a new code and holder on the ticket, in the same decision as the transfer's own event),
declining it, and expiry read from the clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from domain import streams, tickets, transfers
from domain.catalog import TicketTerms, TransferPolicy
from domain.errors import InvalidCommand, NotFound
from domain.events import Event
from domain.tickets import Consumer, TicketScanned, TicketState
from domain.transfers import OfferTransfer, Recipient, TransferState
from tests.unit.builders import (
    NOW,
    SHOW_STARTS,
    purchase_opened,
    purchased_ticket,
    refused,
    replayed,
)

TOKEN = "the-recipients-token"
RECIPIENT = Recipient(name="Bo Berg", email="bo@example.com")
TICKET = streams.ticket(1)


def _ticket(
    terms: TicketTerms | None = None, starts_at: datetime | None = SHOW_STARTS
) -> TicketState:
    opened = purchase_opened(tickets=[purchased_ticket(1, name="Ann Holm", named=True)])
    schedule = tickets.Schedule(starts_at=starts_at, terms=terms or TicketTerms())
    issued = tickets.issue_tickets(opened, NOW, schedule, named={1})
    return replayed(tickets.evolve_ticket, None, issued[TICKET])


def _command(transfer_id: str = "t1", **changes: object) -> OfferTransfer:
    fields: dict[str, object] = {
        "transfer_id": transfer_id,
        "token": TOKEN,
        "recipient": RECIPIENT,
        "by": "partner",
    }
    return OfferTransfer(**(fields | changes))  # type: ignore[arg-type]


def _offered(
    ticket: TicketState,
    latest: TransferState | None = None,
    at: datetime = NOW,
    **changes: object,
) -> TransferState:
    """The transfer offered, its events applied to `ticket` too."""
    command = _command(**changes)
    decided = transfers.offer(ticket, latest, command, at)
    replayed(tickets.evolve_ticket, ticket, decided[TICKET])
    return replayed(transfers.evolve_transfer, None, decided[streams.transfer(command.transfer_id)])


def _accepted(transfer: TransferState, ticket: TicketState, at: datetime = NOW) -> None:
    decided = transfers.accept(
        transfer, ticket, TOKEN, at, new_code="NEWCODE12345", new_attendee_token="tok_new"
    )
    replayed(transfers.evolve_transfer, transfer, decided[streams.transfer("t1")])
    replayed(tickets.evolve_ticket, ticket, decided[TICKET])


# ---- offer -------------------------------------------------------------------------------------


def test_an_offer_goes_on_the_transfer_and_the_ticket() -> None:
    ticket = _ticket()
    decided = transfers.offer(ticket, None, _command(), NOW)
    assert set(decided) == {streams.transfer("t1"), TICKET}
    (offered,) = decided[streams.transfer("t1")]
    assert isinstance(offered, transfers.TransferOffered)
    assert (offered.ticket_id, offered.recipient, offered.token, offered.by) == (
        1,
        RECIPIENT,
        TOKEN,
        "partner",
    )
    assert offered.deadline == NOW + transfers.DEFAULT_DEADLINE
    (marked,) = decided[TICKET]
    assert marked == tickets.TicketTransferOffered(ticket_id=1, transfer_id="t1")


def test_the_deadline_may_be_set_and_is_capped_at_the_close() -> None:
    in_an_hour = NOW + timedelta(hours=1)
    assert _offered(_ticket(), deadline=in_an_hour).offered.deadline == in_an_hour
    closes = NOW + timedelta(hours=5)
    capped = _offered(_ticket(TicketTerms(transfers=TransferPolicy(closes_at=closes))))
    assert capped.offered.deadline == closes
    at_start = _offered(_ticket(), deadline=SHOW_STARTS + timedelta(days=1))
    assert at_start.offered.deadline == SHOW_STARTS


@pytest.mark.parametrize(
    ("deadline", "detail"),
    [(NOW, "must lie in the future"), (NOW.replace(tzinfo=None), "needs a time zone")],
)
def test_a_deadline_not_ahead_is_refused(deadline: datetime, detail: str) -> None:
    with refused(InvalidCommand, "invalid_request", "deadline") as caught:
        transfers.offer(_ticket(), None, _command(deadline=deadline), NOW)
    assert caught.value.detail == detail


@pytest.mark.parametrize(
    ("recipient", "field"),
    [
        (Recipient(name="  ", email="bo@example.com"), "recipient.name"),
        (Recipient(name="Bo", email="not-an-address"), "recipient.email"),
        (Recipient(name="x" * 201, email="bo@example.com"), "recipient.name"),
    ],
)
def test_a_recipient_needs_a_name_and_an_address(recipient: Recipient, field: str) -> None:
    with refused(InvalidCommand, "invalid_request", field):
        transfers.offer(_ticket(), None, _command(recipient=recipient), NOW)


def test_the_recipient_is_trimmed() -> None:
    offered = _offered(_ticket(), recipient=Recipient(name=" Bo Berg ", email=" bo@example.com"))
    assert offered.offered.recipient == RECIPIENT


def test_an_unissued_ticket_is_refused() -> None:
    with refused(transfers.TicketNotIssued, "not_yet_paid"):
        transfers.offer(None, None, _command(), NOW)


def test_a_scanned_ticket_is_refused() -> None:
    ticket = replayed(
        tickets.evolve_ticket,
        _ticket(),
        [TicketScanned(ticket_id=1, scanned_at=NOW, api_key_id=None)],
    )
    with refused(tickets.TicketWasScanned, "ticket_scanned"):
        transfers.offer(ticket, None, _command(), NOW)


def test_a_refunded_ticket_is_refused() -> None:
    ticket = replayed(
        tickets.evolve_ticket, _ticket(), [tickets.TicketRefunded(ticket_id=1, refund_id="r1")]
    )
    with refused(tickets.TicketWasRefunded, "ticket_refunded"):
        transfers.offer(ticket, None, _command(), NOW)


def test_a_ticket_transferred_once_is_refused() -> None:
    ticket = _ticket()
    transfer = _offered(ticket)
    _accepted(transfer, ticket)
    with refused(transfers.TicketAlreadyTransferred, "ticket_already_transferred"):
        transfers.offer(ticket, transfer, _command("t2"), NOW)


def test_an_event_may_forbid_transfers() -> None:
    ticket = _ticket(TicketTerms(transfers=TransferPolicy(allowed=False)))
    with refused(transfers.TransfersNotAllowed, "transfers_not_allowed"):
        transfers.offer(ticket, None, _command(), NOW)


@pytest.mark.parametrize("after", [timedelta(0), timedelta(seconds=1)])
def test_transfers_close_at_the_events_time(after: timedelta) -> None:
    closes = NOW + timedelta(hours=1)
    ticket = _ticket(TicketTerms(transfers=TransferPolicy(closes_at=closes)))
    transfers.offer(ticket, None, _command(), closes - timedelta(seconds=1))
    with refused(transfers.TransfersClosed, "transfers_closed"):
        transfers.offer(ticket, None, _command(), closes + after)


def test_transfers_close_when_the_event_starts() -> None:
    ticket = _ticket(starts_at=NOW + timedelta(minutes=1))
    with refused(transfers.TransfersClosed, "transfers_closed"):
        transfers.offer(ticket, None, _command(), NOW + timedelta(minutes=1))


def test_a_ticket_without_a_start_or_an_end_never_closes() -> None:
    ticket = _ticket(starts_at=None)
    assert transfers.closes_at(ticket) is None
    offered = _offered(ticket, at=NOW + timedelta(days=1000))
    assert offered.offered.deadline == NOW + timedelta(days=1000) + transfers.DEFAULT_DEADLINE


def test_a_second_offer_waits_for_the_first_to_be_answered_or_expire() -> None:
    ticket = _ticket()
    first = _offered(ticket, deadline=NOW + timedelta(hours=1))
    just_before = NOW + timedelta(hours=1) - timedelta(microseconds=1)
    with refused(transfers.TransferPending, "transfer_pending"):
        transfers.offer(ticket, first, _command("t2"), just_before)
    second = _offered(ticket, first, at=NOW + timedelta(hours=1), transfer_id="t2")
    assert ticket.transfer_offers == ("t1", "t2")
    assert second.status(NOW + timedelta(hours=1)) == "offered"


def test_a_declined_offer_frees_the_ticket_at_once() -> None:
    ticket = _ticket()
    first = _offered(ticket)
    replayed(transfers.evolve_transfer, first, transfers.decline(first, ticket, TOKEN, NOW))
    _offered(ticket, first, transfer_id="t2")
    assert ticket.transfer_offers == ("t1", "t2")


# ---- accept ------------------------------------------------------------------------------------


def test_accepting_gives_the_ticket_a_new_code_and_holder() -> None:
    ticket = _ticket()
    transfer = _offered(ticket)
    old_code, old_token = ticket.code, ticket.attendee_token
    decided = transfers.accept(
        transfer, ticket, TOKEN, NOW, new_code="NEWCODE12345", new_attendee_token="tok_new"
    )
    (accepted,) = decided[streams.transfer("t1")]
    assert accepted == transfers.TransferAccepted(transfer_id="t1", ticket_id=1, accepted_at=NOW)
    (moved,) = decided[TICKET]
    assert moved == tickets.TicketTransferred(
        ticket_id=1,
        transfer_id="t1",
        new_code="NEWCODE12345",
        new_attendee_token="tok_new",
        consumer=Consumer(first_name="Bo", last_name="Berg", email="bo@example.com"),
    )
    _accepted(transfer, ticket)
    assert transfer.status(NOW) == "accepted"
    assert (ticket.code, ticket.attendee_token, ticket.holder_name) == (
        "NEWCODE12345",
        "tok_new",
        "Bo Berg",
    )
    assert tickets.admission(ticket, NOW, old_code) == "resold"
    assert tickets.admission(ticket, NOW, "NEWCODE12345") == "ok"
    assert ticket.attendee_token != old_token


def test_a_wrong_token_is_not_found() -> None:
    ticket = _ticket()
    transfer = _offered(ticket)
    for answer in (
        lambda: transfers.accept(
            transfer, ticket, "guess", NOW, new_code="X", new_attendee_token="t"
        ),
        lambda: transfers.decline(transfer, ticket, TOKEN + "x", NOW),
    ):
        with refused(NotFound, "not_found"):
            answer()
    assert not transfers.token_matches(None, TOKEN)


def test_accepting_at_the_deadline_is_too_late() -> None:
    ticket = _ticket()
    transfer = _offered(ticket, deadline=NOW + timedelta(hours=1))
    deadline = NOW + timedelta(hours=1)
    _accepted(transfer, ticket, at=deadline - timedelta(microseconds=1))
    late_ticket = _ticket()
    late = _offered(late_ticket, deadline=deadline)
    assert late.status(deadline) == "expired"
    with refused(transfers.TransferExpired, "transfer_expired"):
        transfers.accept(late, late_ticket, TOKEN, deadline, new_code="X", new_attendee_token="t")
    with refused(transfers.TransferExpired, "transfer_expired"):
        transfers.decline(late, late_ticket, TOKEN, deadline)


def test_an_answered_transfer_is_not_open() -> None:
    ticket = _ticket()
    transfer = _offered(ticket)
    _accepted(transfer, ticket)
    with refused(transfers.TransferNotOpen, "transfer_not_open"):
        transfers.accept(transfer, ticket, TOKEN, NOW, new_code="Y", new_attendee_token="u")
    with refused(transfers.TransferNotOpen, "transfer_not_open"):
        transfers.decline(transfer, ticket, TOKEN, NOW)
    declined_ticket = _ticket()
    declined = _offered(declined_ticket)
    replayed(
        transfers.evolve_transfer,
        declined,
        transfers.decline(declined, declined_ticket, TOKEN, NOW),
    )
    assert declined.status(NOW) == "declined"
    with refused(transfers.TransferNotOpen, "transfer_not_open"):
        transfers.accept(
            declined, declined_ticket, TOKEN, NOW, new_code="Y", new_attendee_token="u"
        )


def _changed(ticket: TicketState, events: list[Event]) -> TicketState:
    return replayed(tickets.evolve_ticket, ticket, events)


@pytest.mark.parametrize(
    ("event", "error", "code"),
    [
        (
            TicketScanned(ticket_id=1, scanned_at=NOW, api_key_id=None),
            tickets.TicketWasScanned,
            "ticket_scanned",
        ),
        (
            tickets.TicketRefunded(ticket_id=1, refund_id="r1"),
            tickets.TicketWasRefunded,
            "ticket_refunded",
        ),
    ],
)
def test_a_ticket_scanned_or_refunded_after_the_offer_cannot_be_accepted(
    event: Event, error: type[Exception], code: str
) -> None:
    ticket = _ticket()
    transfer = _offered(ticket)
    _changed(ticket, [event])
    with refused(error, code):  # type: ignore[arg-type]
        transfers.accept(transfer, ticket, TOKEN, NOW, new_code="X", new_attendee_token="t")


def test_declining_leaves_the_ticket_as_it_was() -> None:
    ticket = _ticket()
    transfer = _offered(ticket)
    (declined,) = transfers.decline(transfer, ticket, TOKEN, NOW)
    assert declined == transfers.TransferDeclined(transfer_id="t1", ticket_id=1, declined_at=NOW)
    before = (ticket.code, ticket.attendee_token, ticket.consumer, ticket.transfers)
    replayed(transfers.evolve_transfer, transfer, [declined])
    assert transfer.status(NOW) == "declined"
    assert (ticket.code, ticket.attendee_token, ticket.consumer, ticket.transfers) == before
