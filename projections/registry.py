"""Every read model the service keeps, by name (the names `linjerum rebuild` accepts)."""

from __future__ import annotations

from projections.availability import AvailabilityProjection
from projections.catalog import CatalogProjection
from projections.confirmations import ConfirmationsProjection
from projections.framework import Projection
from projections.purchases import PurchasesProjection
from projections.tickets import TicketsProjection


def all_projections() -> dict[str, Projection]:
    return {
        p.name: p
        for p in (
            CatalogProjection(),
            AvailabilityProjection(),
            PurchasesProjection(),
            TicketsProjection(),
            ConfirmationsProjection(),
        )
    }
