"""Inventory: what an event's seats and ticket types, or an attraction's days, still have to
sell. `holds` is the aggregate (decides holds and releases on its own stream, whose optimistic
concurrency keeps every seat, type and day within its limit), `events` what it records, and
`stock` the counting rules that both the aggregate and the displayed availability use."""
