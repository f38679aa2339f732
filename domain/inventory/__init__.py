"""Inventory: what an event's seats and ticket types, or an attraction's days, still have to
sell. Two aggregates decide holds and releases, each on its own stream, whose optimistic
concurrency keeps every seat, type and day within its limit: `holds` an event's seats and
ticket types, `attraction_days` an attraction's places per type and day. `events` is what they
record, and `stock` the counting rules that both the aggregates and the displayed availability
use."""
