"""Settings read once from the environment, with defaults that make a fresh clone run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name} must be true or false, got {raw!r}")


def _env_int(name: str, default: int, lowest: int | None = None, highest: int | None = None) -> int:
    """An integer, from `lowest` where a smaller one means nothing (a hold of -5 minutes would
    expire every purchase as it is made) to `highest` where a larger one breaks what it sizes
    (a hold of ten billion minutes overflowed every purchase's expiry into a 500)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
    if lowest is not None and value < lowest:
        raise SystemExit(f"{name} must be {lowest} or more, got {value}")
    if highest is not None and value > highest:
        raise SystemExit(f"{name} must be {highest} or less, got {value}")
    return value


def _env_port(name: str, default: int, lowest: int = 1) -> int:
    """A port this service listens on or connects to (`lowest` 0: 0 is none): one that no
    socket takes is refused here, in one line, not by the socket's traceback."""
    port = _env_int(name, default)
    if not lowest <= port <= 65535:
        raise SystemExit(f"{name} must be a port ({lowest}-65535), got {port}")
    return port


def _env_float(name: str, default: float) -> float:
    """A number of zero or more."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise SystemExit(f"{name} must be a number of zero or more, got {raw!r}")
    return value


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _env_log_level() -> str:
    """A level the logger knows: a misspelt one would quietly log at `info`."""
    level = os.environ.get("LINJERUM_LOG_LEVEL", "info").strip().lower() or "info"
    if level not in LOG_LEVELS:
        raise SystemExit(
            f"LINJERUM_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}"
        )
    return level


def _stripe_api_base() -> str:
    """STRIPE_API_BASE; else, while no Stripe key is set, a simulator running on its own
    (STRIPE_SIM_URL), so a configured key never goes to the simulator."""
    if configured := os.environ.get("STRIPE_API_BASE", ""):
        return configured
    return "" if os.environ.get("STRIPE_SECRET_KEY") else os.environ.get("STRIPE_SIM_URL", "")


@dataclass(frozen=True)
class Settings:
    """Every knob the service has; documented in the README's Settings table."""

    database_url: str = ""
    nats_url: str = ""
    data_dir: Path = Path(".linjerum")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    nats_stream: str = "LINJERUM_EVENTS"
    subject_prefix: str = "linjerum.events"
    db_pool_size: int = 10
    log_level: str = "info"
    stripe_secret_key: str = field(default="", repr=False)
    stripe_publishable_key: str = ""
    stripe_webhook_secret: str = field(default="", repr=False)
    stripe_api_base: str = ""
    stripe_sim_port: int = 12111
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_ssl: bool = False
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_sender: str = "linjerum <tickets@localhost>"
    public_url: str = ""
    hold_minutes: int = 30
    pdf_workers: int = 1
    mail_rush_per_second: float = 20.0
    mail_longest_deferral: float = 30.0
    health_port: int = 0
    metrics_port: int = 0
    trusted_proxies: str = ""
    desk_affinity: bool = True
    ready_max_lag_seconds: int = 30
    link_secret: str = field(default="", repr=False)
    embed_secret: str = field(default="", repr=False)
    embed_previous_secret: str = field(default="", repr=False)
    apple_pass_certificate: str = ""
    apple_pass_key: str = ""
    apple_wwdr_certificate: str = ""
    apple_pass_type_id: str = ""
    apple_team_id: str = ""
    google_wallet_issuer_id: str = ""
    google_service_account_file: str = ""

    @property
    def offers_subject(self) -> str:
        """Where gateways tell each other their seat offers: beside the event stream's
        subjects, not under them, so the stream keeps none of it."""
        return f"{self.subject_prefix}-offers"

    @property
    def desks_subject(self) -> str:
        """Where gateways send sales-desk commands to the owner of an event's stream, beside
        the event stream's subjects."""
        return f"{self.subject_prefix}-desks"

    @property
    def desk_owners_bucket(self) -> str:
        """The key-value bucket of the owners' leases, one per event stream of JetStream."""
        return f"{self.nats_stream}_desk_owners"

    @property
    def uses_simulator(self) -> bool:
        """Without a Stripe secret key, `linjerum run` starts the local Stripe simulator and the
        service talks to it; configuring real Stripe is only a matter of setting the key."""
        return not self.stripe_secret_key

    @property
    def starts_simulator(self) -> bool:
        """A gateway starts the simulator itself unless it reaches one at an address of its own
        (STRIPE_API_BASE, or STRIPE_SIM_URL: compose's `stripe-sim`)."""
        return self.uses_simulator and not self.stripe_api_base

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": os.environ.get("DATABASE_URL", ""),
            "nats_url": os.environ.get("NATS_URL", ""),
            "data_dir": Path(os.environ.get("LINJERUM_DATA_DIR", ".linjerum")),
            "http_host": os.environ.get("LINJERUM_HOST", "127.0.0.1"),
            "http_port": _env_port("LINJERUM_PORT", 8080),
            "nats_stream": os.environ.get("LINJERUM_NATS_STREAM", "LINJERUM_EVENTS"),
            "subject_prefix": os.environ.get("LINJERUM_SUBJECT_PREFIX", "linjerum.events"),
            "db_pool_size": _env_int("LINJERUM_DB_POOL_SIZE", 10, lowest=1, highest=1000),
            "log_level": _env_log_level(),
            "stripe_secret_key": os.environ.get("STRIPE_SECRET_KEY", ""),
            "stripe_publishable_key": os.environ.get("STRIPE_PUBLISHABLE_KEY", ""),
            "stripe_webhook_secret": os.environ.get("STRIPE_WEBHOOK_SECRET", ""),
            "stripe_api_base": _stripe_api_base(),
            "stripe_sim_port": _env_port("STRIPE_SIM_PORT", 12111),
            "smtp_host": os.environ.get("LINJERUM_SMTP_HOST", ""),
            "smtp_port": _env_port("LINJERUM_SMTP_PORT", 587),
            "smtp_starttls": _env_bool("LINJERUM_SMTP_STARTTLS", True),
            "smtp_ssl": _env_bool("LINJERUM_SMTP_SSL", False),
            "smtp_username": os.environ.get("LINJERUM_SMTP_USERNAME", ""),
            "smtp_password": os.environ.get("LINJERUM_SMTP_PASSWORD", ""),
            "smtp_sender": os.environ.get("LINJERUM_SMTP_SENDER", "linjerum <tickets@localhost>"),
            "public_url": os.environ.get("LINJERUM_PUBLIC_URL", ""),
            "hold_minutes": _env_int("LINJERUM_HOLD_MINUTES", 30, lowest=1, highest=10_080),
            # One per core: spawned as PDFs are asked for, idle ones cost no CPU; on two cores
            # two took a purchase PDF's p50 at 64 connections from 1.1 s to 0.7-1.0 s.
            "pdf_workers": _env_int(
                "LINJERUM_PDF_WORKERS", os.cpu_count() or 1, lowest=0, highest=256
            ),
            # E-mails queued per second that make a rush (an on-sale), and how long a due one
            # waits at most for it to pass (services/workers/mailer.py); a deferral of 0 turns
            # the waiting off.
            "mail_rush_per_second": _env_float("LINJERUM_MAIL_RUSH_PER_SECOND", 20.0),
            "mail_longest_deferral": _env_float("LINJERUM_MAIL_LONGEST_DEFERRAL", 30.0),
            "health_port": _env_port("LINJERUM_HEALTH_PORT", 0, lowest=0),
            "metrics_port": _env_port("LINJERUM_METRICS_PORT", 0, lowest=0),
            "trusted_proxies": os.environ.get("LINJERUM_TRUSTED_PROXIES", ""),
            "desk_affinity": _env_bool("LINJERUM_DESK_AFFINITY", True),
            "ready_max_lag_seconds": _env_int(
                "LINJERUM_READY_MAX_LAG_SECONDS", 30, lowest=1, highest=86_400
            ),
            "link_secret": os.environ.get("LINJERUM_LINK_SECRET", ""),
            "embed_secret": os.environ.get("LINJERUM_EMBED_SECRET", ""),
            "embed_previous_secret": os.environ.get("LINJERUM_EMBED_PREVIOUS_SECRET", ""),
            "apple_pass_certificate": os.environ.get("LINJERUM_APPLE_PASS_CERT", ""),
            "apple_pass_key": os.environ.get("LINJERUM_APPLE_PASS_KEY", ""),
            "apple_wwdr_certificate": os.environ.get("LINJERUM_APPLE_WWDR_CERT", ""),
            "apple_pass_type_id": os.environ.get("LINJERUM_APPLE_PASS_TYPE_ID", ""),
            "apple_team_id": os.environ.get("LINJERUM_APPLE_TEAM_ID", ""),
            "google_wallet_issuer_id": os.environ.get("LINJERUM_GOOGLE_WALLET_ISSUER_ID", ""),
            "google_service_account_file": os.environ.get(
                "LINJERUM_GOOGLE_SERVICE_ACCOUNT_FILE", ""
            ),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
