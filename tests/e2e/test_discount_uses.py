"""A discount code's uses when the purchases holding them end in another process than the one
that opened them (the sweeper expires what the gateways sold): every use comes back."""

from __future__ import annotations

import asyncpg

from domain import catalog as c
from domain import discounts, venues
from services.api.context import PURCHASES
from services.dev.sample_event import put_on_sale
from services.usecases import catalog_commands
from tests.e2e.conftest import TEST, issue_key, new_organization, order, post, venue_with


async def _uses(pool: asyncpg.Pool, discount_id: int) -> int:
    kinds = await pool.fetch(
        "SELECT type FROM events WHERE stream_id = $1", f"discount-{discount_id}"
    )
    redeemed = sum(r["type"] == "DiscountCodeRedeemed" for r in kinds)
    return redeemed - sum(r["type"] == "DiscountCodeReleased" for r in kinds)


async def test_purchases_ended_elsewhere_give_their_discount_uses_back(api, pool, serve) -> None:
    """The ending process's desk kept an old copy of the code's stream: a purchase ended after
    one without the code had brought the event's stream up to date found no use to give back,
    and the code ran out of uses early (60 of 60 in an audit)."""
    org = await new_organization(pool)
    row = venues.Row(identifier="A", start=1, end=10)
    venue_id = await venue_with(
        pool, org, venues.SectionPlan(name="Sal", width=10.0, height=10.0, rows=[row])
    )
    plan = c.TicketTypePlan(name="Alm", price_cents=10000, max_per_purchase=20)
    _, type_id = await put_on_sale(pool, org, venue_id, plan, TEST)
    code = discounts.CreateDiscountCode(code="HALF", percentage=50, max_uses=10)
    discount_id = await catalog_commands.create_discount_code(pool, org, code, TEST)
    token = await issue_key(pool, org)
    sweeper = (await serve()).app[PURCHASES].endings

    async def bought(**extra: object) -> str:
        _, created = await post(api, token, "/api/v1/purchases", order(type_id, **extra), 201)
        return created["purchase"]["token"]

    await sweeper.release(await bought(discount_code="HALF"), "expired", TEST)
    plain = await bought()
    coded = [await bought(discount_code="HALF") for _ in range(3)]
    await sweeper.release(plain, "expired", TEST)
    for purchase in coded:
        await sweeper.release(purchase, "expired", TEST)
    assert await _uses(pool, discount_id) == 0
