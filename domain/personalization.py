"""Who a ticket is for: the buyer's or the partner's edits of its consumer, allowed only inside
the event's personalization window and never once the ticket is refunded or scanned, and
checked field by field so a 422 names the field to fix."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Literal

import msgspec

from domain.errors import DomainError, InvalidCommand
from domain.events import Event
from domain.fields import printable
from domain.purchasing import EMAIL, EMAIL_MAX, NAME_MAX
from domain.tickets import Consumer, ConsumerUpdated, TicketState


class PersonalizationClosed(DomainError):
    code = "personalization_closed"


class PersonalizationNotOpen(DomainError):
    code = "personalization_not_open"


def update_attendee(
    state: TicketState,
    name: str | None,
    email: str | None,
    now: datetime,
    field: str,
    details: Mapping[str, object] | None = None,
) -> list[Event]:
    """The buyer's edit of a seat: its name and e-mail (empty strings clear) and any other
    `details` of the consumer (see `edited`), decided as the buyer's personalization."""
    name, email = check_attendee_edit(name, email, now, field, details)
    named = Consumer.named(name, email)
    changes = {"first_name": named.first_name, "last_name": named.last_name, "email": email}
    consumer = edited(state.consumer, {**changes, **(details or {})})
    return personalize(state, consumer, "buyer", now, field)


def check_attendee_edit(
    name: str | None,
    email: str | None,
    now: datetime,
    field: str,
    details: Mapping[str, object] | None = None,
) -> tuple[str | None, str | None]:
    """A buyer's seat edit checked alone, before its seat is known: every entry of a request is
    refused alike for bad input, whether its seat is edited or passed over. The name and e-mail
    trimmed (None for none)."""
    name = name.strip() if name else None
    email = email.strip() if email else None
    if name is not None and len(name) > NAME_MAX:
        raise InvalidCommand(f"name is longer than {NAME_MAX} characters", f"{field}.name")
    printable(name, f"{field}.name")
    if email is not None and not _is_email(email):
        raise InvalidCommand("not a valid e-mail address", f"{field}.email")
    if details:  # checked alone first, so a refusal names the `consumer` object's field
        _checked(edited(Consumer(), details), now, f"{field}.consumer.")
    return name, email


PersonalizedBy = Literal["partner", "buyer"]
_TEXT_MAX = {
    "address": 200,
    "postal_code": 20,
    "city": 100,
    "state": 100,
    "realm": 100,
    "language": 35,
}
_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-]{3,30}\Z")
# ISO 3166-1 alpha-2, as the tz database lists the codes in use (and XK, Kosovo's, which card
# networks and Stripe use).
_COUNTRY_CODES = """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO
BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ
DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP
GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG
KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML
MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE
PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL
SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM
US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK
"""
_COUNTRIES = frozenset(_COUNTRY_CODES.split())
# A language tag (BCP 47's common shape): `da`, `en-GB`, `zh-Hant-TW`.
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*\Z")
# ISO/IEC 5218: not known, male, female, not applicable.
GENDERS = (0, 1, 2, 9)
EARLIEST_BIRTH = date(1900, 1, 1)


def edited(consumer: Consumer, changes: Mapping[str, object]) -> Consumer:
    """The consumer with `changes` applied: a field given as "" or None is cleared, a field not
    named keeps its value."""
    cleared = {name: None if value == "" else value for name, value in changes.items()}
    return msgspec.structs.replace(consumer, **cleared)


def personalize(
    state: TicketState, consumer: Consumer, by: PersonalizedBy, now: datetime, field: str = ""
) -> list[Event]:
    """The ticket's consumer becomes `consumer`, given by the partner or the buyer inside the
    window [personalization_start, personalization_end). Fields the event requires may stay
    empty (the ticket then still needs personalization). Refused once refunded or scanned."""
    consumer = _checked(consumer, now, f"{field}." if field else "")
    if state.refunded_by is not None:
        raise PersonalizationClosed("the ticket is refunded")
    if state.scan_count:
        raise PersonalizationClosed("the ticket has been scanned")
    start, end = state.issued.personalization_start, state.issued.personalization_end
    if start is not None and now < start:
        raise PersonalizationNotOpen(f"personalization opens at {start.isoformat()}")
    if end is not None and now >= end:
        raise PersonalizationClosed("attendee details can no longer be changed")
    if consumer == state.consumer:  # nothing changes: nothing to store
        return []
    return [ConsumerUpdated(ticket_id=state.issued.ticket_id, consumer=consumer, by=by)]


def _is_email(text: str) -> bool:
    return len(text) <= EMAIL_MAX and EMAIL.match(text) is not None


def _checked(consumer: Consumer, now: datetime, prefix: str) -> Consumer:
    """The consumer trimmed (blank text is no text), or a 422 naming its first bad field."""
    texts = {
        name: (value.strip() or None) if isinstance(value, str) else value
        for name, value in msgspec.structs.asdict(consumer).items()
    }
    if texts["country"]:
        texts["country"] = texts["country"].upper()
    consumer = Consumer(**texts)

    def refuse(name: str, detail: str) -> InvalidCommand:
        return InvalidCommand(detail, f"{prefix}{name}")

    for name in ("first_name", "last_name"):
        value = getattr(consumer, name)
        if value is not None and len(value) > NAME_MAX:
            raise refuse(name, f"longer than {NAME_MAX} characters")
        printable(value, f"{prefix}{name}")
    for name, limit in _TEXT_MAX.items():
        value = getattr(consumer, name)
        if value is not None and len(value) > limit:
            raise refuse(name, f"longer than {limit} characters")
        printable(value, f"{prefix}{name}")
    if consumer.email is not None and not _is_email(consumer.email):
        raise refuse("email", "not a valid e-mail address")
    printable(consumer.email, f"{prefix}email")
    if consumer.phone_number is not None and not _PHONE.match(consumer.phone_number):
        raise refuse("phone_number", "not a phone number (digits, spaces, ()-, a leading +)")
    born = consumer.date_of_birth
    if born is not None and not EARLIEST_BIRTH <= born <= now.date():
        raise refuse("date_of_birth", f"must lie between {EARLIEST_BIRTH} and today")
    if consumer.gender is not None and consumer.gender not in GENDERS:
        raise refuse("gender", "one of 0 (not known), 1 (male), 2 (female), 9 (not applicable)")
    if consumer.country is not None and consumer.country not in _COUNTRIES:
        raise refuse("country", "an ISO 3166-1 alpha-2 code")
    if consumer.language is not None and not _LANGUAGE.match(consumer.language):
        raise refuse("language", "a language tag, e.g. da or en-GB")
    return consumer
