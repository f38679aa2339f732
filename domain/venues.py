"""Venues and their seat plans: the sections, rows and seats every event at the venue sells
from. A plan may change while events are on sale, but never so that a seat already held or
sold disappears, nor a section an event's ticket type sells from."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Literal

import msgspec

from domain.events import Event
from domain.fields import COLOR, Struct, require, slug, text


class Row(Struct):
    identifier: str
    start: int
    end: int
    row_offset_x: float = 0.0
    row_position_y: float = 0.0

    @property
    def seat_count(self) -> int:
        return self.end - self.start + 1


class SectionPlan(Struct):
    """A section as drawn on the floor plan: a rectangle or a ring segment (arc), seated rows
    or a standing area with a capacity."""

    name: str
    display_order: int = 0
    seating_mode: Literal["seated", "standing"] = "seated"
    section_type: Literal["rectangle", "arc"] = "rectangle"
    color: str = "#3B82F6"
    position_x: float = 0.0
    position_y: float = 0.0
    rotation: float = 0.0
    width: float | None = None
    height: float | None = None
    inner_radius: float | None = None
    outer_radius: float | None = None
    start_angle: float | None = None
    end_angle: float | None = None
    rows: list[Row] = msgspec.field(default_factory=list)
    standing_capacity: int = 0


class Section(SectionPlan, frozen=True, kw_only=True):
    id: int

    @property
    def seated_capacity(self) -> int:
        if self.seating_mode != "seated":
            return 0
        return sum(row.seat_count for row in self.rows)


class VenueRegistered(Event, frozen=True):
    venue_id: int
    organization_id: int
    key: str
    name: str
    address: str | None
    city: str | None
    zip_code: str | None
    floor_plan_width: int
    floor_plan_height: int
    sections: list[Section]


class VenuePlanChanged(Event, frozen=True):
    """The venue's sections from now on: the whole plan, so a replay needs no earlier one."""

    venue_id: int
    sections: list[Section]


class RegisterVenue(Struct):
    key: str
    name: str
    sections: list[SectionPlan]
    address: str | None = None
    city: str | None = None
    zip_code: str | None = None
    floor_plan_width: int = 1200
    floor_plan_height: int = 800


class PlannedSection(SectionPlan, frozen=True, kw_only=True):
    """A section of a changed plan: `id` keeps one of the venue's sections (the ticket types
    that name it still do), none adds a new one."""

    id: int | None = None


class ChangeSeatPlan(Struct):
    sections: list[PlannedSection]


# A plan is drawn and held in memory seat by seat: a row of a trillion seats took the machine.
MAX_ROW_SEATS = 1000
MAX_SEAT_NUMBER = 99_999


def _check_section(section: SectionPlan, field: str) -> None:
    text(section.name, f"{field}.name")
    require(bool(COLOR.match(section.color)), f"{field}.color", "color is #RRGGBB")
    if section.section_type == "arc":
        for name in ("inner_radius", "outer_radius", "start_angle", "end_angle"):
            require(getattr(section, name) is not None, f"{field}.{name}", "arc needs " + name)
        assert section.inner_radius is not None and section.outer_radius is not None
        require(
            0 <= section.inner_radius < section.outer_radius,
            f"{field}.outer_radius",
            "outer_radius must exceed inner_radius",
        )
    else:
        for name in ("width", "height"):
            value = getattr(section, name)
            require(value is not None and value > 0, f"{field}.{name}", f"{name} must be > 0")
    if section.seating_mode == "standing":
        require(not section.rows, f"{field}.rows", "a standing section has no rows")
        require(
            section.standing_capacity > 0,
            f"{field}.standing_capacity",
            "a standing section needs a capacity",
        )
        return
    require(bool(section.rows), f"{field}.rows", "a seated section needs rows")
    seen: set[str] = set()
    for i, row in enumerate(section.rows):
        text(row.identifier, f"{field}.rows[{i}].identifier", 10)
        require(row.identifier not in seen, f"{field}.rows[{i}].identifier", "duplicate row")
        require(1 <= row.start <= row.end, f"{field}.rows[{i}].end", "seats run start..end")
        require(
            row.end - row.start < MAX_ROW_SEATS and row.end <= MAX_SEAT_NUMBER,
            f"{field}.rows[{i}].end",
            f"a row has at most {MAX_ROW_SEATS} seats, numbered up to {MAX_SEAT_NUMBER}",
        )
        seen.add(row.identifier)


def register_venue(
    cmd: RegisterVenue, organization_id: int, venue_id: int, section_ids: Sequence[int]
) -> list[Event]:
    """`section_ids` are freshly allocated ids, one per section of the plan, in order."""
    slug(cmd.key, "key")
    text(cmd.name, "name")
    require(bool(cmd.sections), "sections", "a venue needs at least one section")
    require(len(section_ids) == len(cmd.sections), "sections", "one id per section")
    for i, section in enumerate(cmd.sections):
        _check_section(section, f"sections[{i}]")
    sections = [
        Section(id=sid, **msgspec.structs.asdict(plan))
        for sid, plan in zip(section_ids, cmd.sections, strict=True)
    ]
    return [
        VenueRegistered(
            venue_id=venue_id,
            organization_id=organization_id,
            key=cmd.key,
            name=cmd.name,
            address=cmd.address,
            city=cmd.city,
            zip_code=cmd.zip_code,
            floor_plan_width=cmd.floor_plan_width,
            floor_plan_height=cmd.floor_plan_height,
            sections=sections,
        )
    ]


def evolve_venue(state: VenueRegistered | None, event: Event) -> VenueRegistered | None:
    """The venue as registered, with its latest plan."""
    if isinstance(event, VenueRegistered):
        return event
    if isinstance(event, VenuePlanChanged) and state is not None:
        return msgspec.structs.replace(state, sections=event.sections)
    return state


SeatKey = tuple[int, str, int]  # section id, row, seat number


def _seats(section: Section) -> set[SeatKey]:
    return {
        (section.id, row.identifier, n)
        for row in section.rows
        for n in range(row.start, row.end + 1)
    }


def _check_sold_in(
    before: Sequence[Section], after: Sequence[Section], sold_in: Mapping[int, str]
) -> None:
    modes = {s.id: s.seating_mode for s in after}
    for section in before:
        user = sold_in.get(section.id)
        if user is None:
            continue
        require(
            section.id in modes,
            "sections",
            f"section {section.id} ({section.name}) is sold by {user}: it cannot leave the plan",
        )
        require(
            modes[section.id] == section.seating_mode,
            "sections",
            f"section {section.id} ({section.name}) is sold by {user}: it stays"
            f" {section.seating_mode}",
        )


def change_seat_plan(
    cmd: ChangeSeatPlan,
    venue: VenueRegistered,
    new_ids: Sequence[int],
    taken: Collection[SeatKey] = (),
    sold_in: Mapping[int, str] | None = None,
) -> list[Event]:
    """`new_ids`: freshly allocated ids for the sections without one, in order. `taken`: the
    seats held or sold for the venue's events, which the new plan must still have. `sold_in`:
    the sections ticket types of the venue's events sell from (each with the type that does),
    which the new plan must keep, seated or standing as they are: a type's seats or places
    cannot be planned away from under it."""
    require(bool(cmd.sections), "sections", "a venue needs at least one section")
    known = {s.id for s in venue.sections}
    kept = [s.id for s in cmd.sections if s.id is not None]
    require(len(kept) == len(set(kept)), "sections", "a section id appears twice")
    fresh = iter(new_ids)
    sections = []
    for i, planned in enumerate(cmd.sections):
        field = f"sections[{i}]"
        _check_section(planned, field)
        require(planned.id is None or planned.id in known, f"{field}.id", "not this venue's")
        plan = msgspec.structs.asdict(planned)
        sid = plan.pop("id")
        sections.append(Section(id=next(fresh) if sid is None else sid, **plan))
    require(next(fresh, None) is None, "sections", "one new id per new section")
    _check_sold_in(venue.sections, sections, sold_in or {})
    seats = set().union(*(_seats(s) for s in sections))
    lost = sorted(seat for seat in taken if seat not in seats)
    first = f"section {lost[0][0]} row {lost[0][1]} seat {lost[0][2]}" if lost else ""
    require(
        not lost,
        "sections",
        f"{len(lost)} seats already held or sold are not in the new plan (first: {first})",
    )
    if sections == venue.sections:
        return []
    return [VenuePlanChanged(venue_id=venue.venue_id, sections=sections)]
