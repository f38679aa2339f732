"""Use cases: what the gateway asks of the domain, the event store and Stripe."""
