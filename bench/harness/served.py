"""What the gateways' activity log says of the requests they served."""

from __future__ import annotations

import asyncpg

# What the gateways' activity log times (the handler's start to its answer), by request.
SERVED = (
    ("POST /purchases", "POST", "/api/v1/purchases"),
    ("Stripe webhook", "POST", "/api/v1/webhooks/stripe"),
    ("GET /purchases/{token}", "GET", "/api/v1/purchases/%"),
)


async def served_requests(pool: asyncpg.Pool) -> str:
    """Requests as the gateways saw them (the activity log's duration, from the handler's
    start to its answer): the load generator's latency less its own queueing and the server's
    wait before the request's turn on the event loop."""
    lines = []
    for name, method, path in SERVED:
        row = await pool.fetchrow(
            "SELECT count(*) AS n,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99"
            " FROM api_activity WHERE method = $1 AND path LIKE $2",
            method,
            path,
        )
        lines.append(
            f"{name} in the gateways' activity log (handler time): {row['n']} calls,"
            f" p50 {row['p50'] or 0:.1f} ms, p99 {row['p99'] or 0:.1f} ms"
        )
    return "\n".join(lines)
