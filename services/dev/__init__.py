"""Development stand-ins: the Stripe simulator and the demo data."""
