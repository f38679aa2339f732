"""Transfer endpoints: the holder offers a ticket to someone (through the partner, or as the
buyer with the purchase e-mail, as the buyer API authenticates), the recipient accepts or
declines it with the token from their e-mail (no API key: the token is the capability), and
the partner reads a ticket's transfers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from domain.errors import NotFound
from domain.purchasing import EMAIL_MAX, NAME_MAX
from domain.tickets import TicketState
from domain.transfers import (
    OfferedBy,
    OfferTransfer,
    Recipient,
    TransferStatus,
    shown_status,
)
from infra.eventstore import Metadata
from infra.idempotency import Claim
from services.api import idempotent
from services.api.context import (
    metadata_of,
    now,
    organization_of,
    pool_of,
    request_id_of,
)
from services.api.http import decode_body, json_response, parse_body
from services.api.routes import Handler, Route
from services.api.schemas import Payload
from services.usecases import ticket_resource, transfers
from services.usecases.transfers import Transfer

TAG = "Transfers"
TOKEN_MAX = 128


class RecipientBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=NAME_MAX)]
    email: Annotated[str, Meta(min_length=3, max_length=EMAIL_MAX)]


PurchaseEmail = Annotated[
    str,
    Meta(
        description="The purchase e-mail: the buyer offers the ticket (as the buyer API"
        " authenticates, a uniform 404 on a mismatch). Left out: the partner offers it.",
        min_length=3,
        max_length=EMAIL_MAX,
    ),
]


class TransferOffer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    recipient: RecipientBody
    email: PurchaseEmail | None = None
    deadline: Annotated[
        datetime | None,
        Meta(
            description="Until when the recipient may accept (default 72 hours from now); never"
            " later than transfers of the ticket close"
        ),
    ] = None


class TransferAnswer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    token: Annotated[str, Meta(min_length=1, max_length=TOKEN_MAX)]


class TransferRecipient(Payload):
    name: str
    email: str


class TransferView(Payload):
    id: str
    ticket_uid: str
    status: TransferStatus
    recipient: TransferRecipient
    offered_by: OfferedBy
    offered_at: datetime
    deadline: datetime
    accepted_at: datetime | None
    declined_at: datetime | None


class TransferResponse(Payload):
    transfer: TransferView


class TransferList(Payload):
    transfers: list[TransferView]


class ReceivedTicket(Payload):
    code: str
    attendee_token: str


class AnswerResponse(Payload):
    transfer: TransferView
    ticket: Annotated[
        ReceivedTicket | None,
        Meta(description="The ticket under its new code, once accepted: the recipient's now"),
    ]


def _view(state: transfers.TransferState, ticket: TicketState | None) -> TransferView:
    offered = state.offered
    return TransferView(
        id=offered.transfer_id,
        ticket_uid=str(offered.ticket_id),
        status=shown_status(state, ticket, now()),
        recipient=TransferRecipient(name=offered.recipient.name, email=offered.recipient.email),
        offered_by=offered.by,
        offered_at=offered.offered_at,
        deadline=offered.deadline,
        accepted_at=state.accepted_at,
        declined_at=state.declined_at,
    )


async def offer_transfer(request: web.Request) -> web.Response:
    raw = await request.read()
    return await idempotent.once(request, raw, lambda claim: _offer(request, raw, claim))


async def offer_transfer_of_uid(request: web.Request) -> web.Response:
    """The same offer, made by the partner from the ticket resource's link."""
    return await offer_transfer(request)


async def _offer(request: web.Request, raw: bytes, claim: Claim | None) -> web.Response:
    """Under an Idempotency-Key the transfer's id comes from the key, so a retry of a request
    that stored its offer but failed to answer (a crash, an outage) answers that offer instead
    of refusing the ticket as `transfer_pending` to its own offer."""
    body = decode_body(raw, TransferOffer)
    pool, organization_id = pool_of(request), organization_of(request)
    code = request.match_info.get("code")
    by: OfferedBy = "partner" if body.email is None else "buyer"
    if code is None:  # the ticket resource's link; with the purchase e-mail, the buyer's offer
        uid = request.match_info["uid"]
        ticket = await ticket_resource.by_uid(pool, uid, organization_id)
        if body.email is not None and not transfers.bought_by(ticket.purchase, body.email):
            raise NotFound("ticket not found", "uid")
        ticket_id = ticket.bought.id
    elif body.email is None:
        ticket_id = await transfers.partner_ticket(pool, code, organization_id)
    else:
        ticket_id = await transfers.buyer_ticket(pool, code, body.email, organization_id)
    transfer_id = transfers.new_transfer_id()
    if claim is not None:
        transfer_id = transfers.transfer_id_for(claim.reserved)
        stored, _ = await transfers.load_transfer(pool, transfer_id)
        if stored is not None and stored.offered.ticket_id == ticket_id:
            return json_response(TransferResponse(transfer=_view(stored, None)), status=201)
    command = OfferTransfer(
        transfer_id=transfer_id,
        token=transfers.new_accept_token(),
        recipient=Recipient(name=body.recipient.name, email=body.recipient.email),
        by=by,
        deadline=body.deadline,
    )
    offered = await transfers.offer(pool, ticket_id, command, metadata_of(request))
    return json_response(
        TransferResponse(transfer=_view(offered.state, offered.ticket)), status=201
    )


def _recipient_metadata(request: web.Request) -> Metadata:
    """The recipient has no API key: their answer is recorded with the request alone."""
    request_id = request_id_of(request)
    return Metadata(request_id=request_id, actor="transfer-recipient", correlation_id=request_id)


def _answered(answered: Transfer, accepted: bool) -> web.Response:
    ticket = answered.ticket
    received = ReceivedTicket(code=ticket.code, attendee_token=ticket.attendee_token)
    return json_response(
        AnswerResponse(
            transfer=_view(answered.state, ticket), ticket=received if accepted else None
        )
    )


async def accept_transfer(request: web.Request) -> web.Response:
    return await _answer(request, accepted=True)


async def decline_transfer(request: web.Request) -> web.Response:
    return await _answer(request, accepted=False)


async def _answer(request: web.Request, *, accepted: bool) -> web.Response:
    """The recipient's answer, with the token from the offer's e-mail."""
    body = await parse_body(request, TransferAnswer)
    answer = transfers.accept if accepted else transfers.decline
    answered = await answer(
        pool_of(request),
        request.match_info["transfer_id"],
        body.token,
        _recipient_metadata(request),
    )
    return _answered(answered, accepted=accepted)


async def get_transfer(request: web.Request) -> web.Response:
    found = await transfers.partner_transfer(
        pool_of(request), request.match_info["transfer_id"], organization_of(request)
    )
    return json_response(TransferResponse(transfer=_view(found.state, found.ticket)))


async def list_ticket_transfers(request: web.Request) -> web.Response:
    pool = pool_of(request)
    ticket = await ticket_resource.by_uid(pool, request.match_info["uid"], organization_of(request))
    found = await transfers.ticket_transfers(pool, ticket.bought.id)
    return json_response(TransferList(transfers=[_view(t.state, t.ticket) for t in found]))


def _offering(path: str, named_by: str, handler: Handler, summary: str) -> Route:
    """An offer's route: the same body and answers whichever way its path names the ticket."""
    return Route(
        "POST",
        path,
        handler,
        summary,
        TAG,
        TransferResponse,
        status=201,
        body=TransferOffer,
        errors=(401, 404, 409, 422, 429),
        path_params={named_by: str},
        idempotent=True,
    )


ROUTES = [
    _offering(
        "/api/v1/tickets/{code}/transfers",
        "code",
        offer_transfer,
        "Offer a ticket to someone (by the partner, or by the buyer with the purchase e-mail)",
    ),
    _offering(
        "/api/v1/tickets/uid/{uid}/transfers",
        "uid",
        offer_transfer_of_uid,
        "Offer a ticket to someone, by its uid (the resource's shop:ticket_transfer_approvals)",
    ),
    Route(
        "GET",
        "/api/v1/tickets/uid/{uid}/transfers",
        list_ticket_transfers,
        "A ticket's transfers",
        TAG,
        TransferList,
        errors=(401, 404, 429),
        path_params={"uid": str},
    ),
    Route(
        "GET",
        "/api/v1/transfers/{transfer_id}",
        get_transfer,
        "Fetch a transfer",
        TAG,
        TransferResponse,
        errors=(401, 404, 429),
        path_params={"transfer_id": str},
    ),
    Route(
        "POST",
        "/api/v1/transfers/{transfer_id}/accept",
        accept_transfer,
        "Accept a transfer with the token from its e-mail (no API key)",
        TAG,
        AnswerResponse,
        body=TransferAnswer,
        errors=(404, 409, 422),
        authenticated=False,
        path_params={"transfer_id": str},
    ),
    Route(
        "POST",
        "/api/v1/transfers/{transfer_id}/decline",
        decline_transfer,
        "Decline a transfer with the token from its e-mail (no API key)",
        TAG,
        AnswerResponse,
        body=TransferAnswer,
        errors=(404, 409, 422),
        authenticated=False,
        path_params={"transfer_id": str},
    ),
]
