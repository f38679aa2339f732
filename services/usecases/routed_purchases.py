"""What a gateway sends the gateway that owns an inventory stream (services/usecases/desk_owners.py)
to open a purchase there, and what the owner answers: the purchase it opened, its refusal with
the code the buyer must get, or a failure after which the asking gateway decides itself."""

from __future__ import annotations

import msgspec

from domain import sale_commands
from domain.errors import DomainError
from domain.purchasing import PurchaseState
from infra.eventstore import Metadata
from services.usecases.desk_owners import DeskOwners, OwnerSilent


class RefusedByOwner(DomainError):
    """A refusal made by the desk of the gateway that owns the stream, with its code."""

    def __init__(self, code: str, detail: str, field: str | None) -> None:
        super().__init__(detail, field)
        self.code = code


class _OpenEvent(msgspec.Struct, frozen=True, tag=True):
    stream: str
    command: sale_commands.OpenEventPurchase
    metadata: Metadata


class _OpenAttraction(msgspec.Struct, frozen=True, tag=True):
    stream: str
    command: sale_commands.OpenAttractionPurchase
    metadata: Metadata


class _Opened(msgspec.Struct, frozen=True, tag=True):
    state: PurchaseState


class _Refused(msgspec.Struct, frozen=True, tag=True):
    code: str
    detail: str
    field: str | None


class _Failed(msgspec.Struct, frozen=True, tag=True):
    error: str


_encoder = msgspec.msgpack.Encoder()
_asks = msgspec.msgpack.Decoder(_OpenEvent | _OpenAttraction)
_answers = msgspec.msgpack.Decoder(_Opened | _Refused | _Failed)


class OwnerFailed(Exception):
    """The owner could not decide the purchase, or did not answer in time (it may still have
    opened it): the asking gateway decides the same draft itself."""


async def ask_owner(
    owners: DeskOwners, owner: str, stream: str, command: sale_commands.OpenPurchase, meta: Metadata
) -> PurchaseState:
    """The purchase the owner opened; RefusedByOwner for its refusal. OwnerGone (nobody
    listens on the owner's subject) passes through."""
    ask = (
        _OpenEvent(stream, command, meta)
        if isinstance(command, sale_commands.OpenEventPurchase)
        else _OpenAttraction(stream, command, meta)
    )
    try:
        answer = _answers.decode(await owners.ask(owner, _encoder.encode(ask)))
    except OwnerSilent:
        owners.silent(stream, owner)
        answer = _Failed("no answer in time")
    match answer:
        case _Opened():
            return answer.state
        case _Refused():
            raise RefusedByOwner(answer.code, answer.detail, answer.field)
    raise OwnerFailed(answer.error)


def asked(data: bytes) -> tuple[str, sale_commands.OpenPurchase, Metadata]:
    """The stream, command and metadata another gateway sent."""
    ask = _asks.decode(data)
    return ask.stream, ask.command, ask.metadata


def opened(state: PurchaseState) -> bytes:
    return _encoder.encode(_Opened(state))


def refused(exc: DomainError) -> bytes:
    return _encoder.encode(_Refused(exc.code, exc.detail, exc.field))


def failed(exc: Exception) -> bytes:
    return _encoder.encode(_Failed(repr(exc)))
