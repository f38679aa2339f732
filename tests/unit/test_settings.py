"""Settings from the environment: the mail's rush knobs take numbers of zero or more, and a
bad value stops the process with a message naming the variable."""

from __future__ import annotations

import pytest

from infra.settings import Settings


def test_mail_yields_to_a_rush_of_20_a_second_for_at_most_30_seconds_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LINJERUM_MAIL_RUSH_PER_SECOND", raising=False)
    monkeypatch.delenv("LINJERUM_MAIL_LONGEST_DEFERRAL", raising=False)
    settings = Settings.from_env()
    assert (settings.mail_rush_per_second, settings.mail_longest_deferral) == (20.0, 30.0)


def test_the_rush_knobs_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINJERUM_MAIL_RUSH_PER_SECOND", "2.5")
    monkeypatch.setenv("LINJERUM_MAIL_LONGEST_DEFERRAL", "0")
    settings = Settings.from_env()
    assert (settings.mail_rush_per_second, settings.mail_longest_deferral) == (2.5, 0.0)


@pytest.mark.parametrize("raw", ["-1", "soon", "nan"])
def test_a_bad_rush_knob_stops_with_its_name(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("LINJERUM_MAIL_LONGEST_DEFERRAL", raw)
    with pytest.raises(SystemExit, match="LINJERUM_MAIL_LONGEST_DEFERRAL"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("LINJERUM_PORT", "99999"),
        ("LINJERUM_PORT", "0"),
        ("STRIPE_SIM_PORT", "-1"),
        ("LINJERUM_SMTP_PORT", "70000"),
        ("LINJERUM_HEALTH_PORT", "65536"),
    ],
)
def test_a_port_no_socket_takes_stops_with_its_name(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str
) -> None:
    """It reached the socket and stopped the run with a traceback."""
    monkeypatch.setenv(name, raw)
    with pytest.raises(SystemExit, match=f"{name} must be a port"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("LINJERUM_HOLD_MINUTES", "-5"),
        ("LINJERUM_HOLD_MINUTES", "0"),
        ("LINJERUM_DB_POOL_SIZE", "0"),
        ("LINJERUM_PDF_WORKERS", "-1"),
        ("LINJERUM_READY_MAX_LAG_SECONDS", "0"),
        ("LINJERUM_HOLD_MINUTES", "10000000000"),
        ("LINJERUM_HOLD_MINUTES", "99999999999999999999"),
        ("LINJERUM_DB_POOL_SIZE", "100000"),
    ],
)
def test_a_count_outside_its_range_stops_with_its_name(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str
) -> None:
    """A hold of -5 minutes was taken, and every purchase expired as it was made."""
    monkeypatch.setenv(name, raw)
    with pytest.raises(SystemExit, match=f"{name} must be"):
        Settings.from_env()


def test_the_log_level_is_one_the_logger_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt level logged at `info` without a word."""
    monkeypatch.setenv("LINJERUM_LOG_LEVEL", "WARNING")
    assert Settings.from_env().log_level == "warning"
    monkeypatch.setenv("LINJERUM_LOG_LEVEL", "nope")
    with pytest.raises(SystemExit, match="LINJERUM_LOG_LEVEL must be one of"):
        Settings.from_env()
