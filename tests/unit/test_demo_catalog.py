"""The demo catalog seeds again over a venue whose plan was changed since."""

from __future__ import annotations

from datetime import date

import msgspec

from domain import venues
from services.dev import demo_catalog as demo


def test_the_theatres_events_are_made_over_a_plan_with_a_section_added() -> None:
    """`make run` after `venues set-plan` added a section stopped with a traceback."""
    (registered,) = venues.register_venue(demo.THEATRE, 1, 2, [10, 11, 12, 13, 14])
    assert isinstance(registered, venues.VenueRegistered)
    added = venues.Section(id=15, **msgspec.structs.asdict(demo.THEATRE.sections[0]))
    changed = msgspec.structs.replace(registered, sections=[*registered.sections, added])
    made = demo.theatre_events(changed, date(2026, 12, 7))
    assert made == demo.theatre_events(registered, date(2026, 12, 7))
