"""Every read model the service keeps, by name (the names `linjerum rebuild` accepts)."""

from __future__ import annotations

import asyncpg

from projections.availability import AvailabilityProjection
from projections.catalog import CatalogProjection
from projections.confirmations import ConfirmationsProjection
from projections.disputes import DisputesProjection
from projections.framework import Projection, ensure_live_schema
from projections.payment_effects import PaymentEffectsProjection
from projections.purchases import PurchasesProjection
from projections.refund_mail import RefundMailProjection
from projections.refund_requests import RefundRequestsProjection
from projections.tickets import TicketsProjection
from projections.transfer_mail import TransferMailProjection


def all_projections() -> dict[str, Projection]:
    return {
        p.name: p
        for p in (
            CatalogProjection(),
            AvailabilityProjection(),
            PurchasesProjection(),
            TicketsProjection(),
            ConfirmationsProjection(),
            PaymentEffectsProjection(),
            TransferMailProjection(),
            RefundRequestsProjection(),
            RefundMailProjection(),
            DisputesProjection(),
        )
    }


def chosen(names: str | None) -> list[Projection]:
    """The read models a comma-separated list names (every one for None), or ValueError naming
    those that are not read models and the ones that are."""
    every = all_projections()
    if names is None:
        return list(every.values())
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in every]
    if unknown or not wanted:
        raise ValueError(
            f"not read models: {', '.join(unknown) or '(none named)'}; the read models are"
            f" {', '.join(every)}"
        )
    return [every[name] for name in dict.fromkeys(wanted)]


async def ensure_read_models(pool: asyncpg.Pool) -> None:
    """Every read model's tables exist before the first read or sweep, even if no projector
    has run yet."""
    for projection in all_projections().values():
        await ensure_live_schema(pool, projection)
