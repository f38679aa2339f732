"""The fault-injection layer runs the gateway as tests/e2e does (in-process, real HTTP, the real
database and Stripe simulator); its relay, projectors and NATS are its own, so they can be
stopped and started."""

from tests.e2e.conftest import (  # noqa: F401  (fixtures)
    _close_test_gateways,
    api,
    catalog,
    demo_token,
    serve,
    stripe_sim,
    webhook_port,
)
