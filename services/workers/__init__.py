"""Long-running workers, each one process in production: relay, projectors, mailer, sweeper,
payments."""
