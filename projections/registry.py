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


async def ensure_read_models(pool: asyncpg.Pool) -> None:
    """Every read model's tables exist before the first read or sweep, even if no projector
    has run yet."""
    for projection in all_projections().values():
        await ensure_live_schema(pool, projection)
