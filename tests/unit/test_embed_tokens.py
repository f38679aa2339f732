"""Embed tokens: a token opens only the kind, subject, organization and key it was minted for,
for 15 minutes; anything altered, another secret, or another kind refuses it. After a rotation
the previous secret's tokens verify until they expire."""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.embed_tokens import (
    SECRET_FILE,
    TOKEN_SECONDS,
    EmbedClaims,
    EmbedRefused,
    EmbedSigner,
    embed_signer,
)
from infra.settings import Settings

SECRET = b"s" * 32
OLD_SECRET = b"o" * 32
NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
CLAIMS = struct.Struct(">BQQQq")


def _refused(signer: EmbedSigner, token: str, kind="planner", at: datetime = NOW) -> str:
    with pytest.raises(EmbedRefused) as refused:
        signer.verify(token, kind, at)
    return refused.value.reason


def _raw(token: str) -> bytearray:
    return bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_a_token_opens_what_it_was_minted_for_for_fifteen_minutes() -> None:
    signer = EmbedSigner(SECRET)
    token, claims = signer.mint("planner", 123, 7, 42, NOW)
    assert claims == EmbedClaims("planner", 123, 7, 42, NOW + timedelta(seconds=TOKEN_SECONDS))
    assert "=" not in token and len(token) < 70
    assert signer.verify(token, "planner", NOW + timedelta(seconds=TOKEN_SECONDS - 1)) == claims
    assert _refused(signer, token, at=NOW + timedelta(seconds=TOKEN_SECONDS)) == "expired"


def test_a_tampered_token_is_refused() -> None:
    signer = EmbedSigner(SECRET)
    token, _ = signer.mint("planner", 123, 7, 42, NOW)
    for position in range(len(_raw(token))):
        raw = _raw(token)
        raw[position] ^= 0x01
        assert _refused(signer, _token(raw)) in ("forged", "malformed")
    assert _refused(signer, token[:-1]) == "malformed"
    assert _refused(signer, token + "A") == "malformed"
    assert _refused(signer, "") == "malformed"
    assert _refused(EmbedSigner(b"x" * 32), token) == "forged"


def test_another_organization_cannot_be_written_into_a_token() -> None:
    signer = EmbedSigner(SECRET)
    token, _ = signer.mint("planner", 123, 7, 42, NOW)
    raw = _raw(token)
    kind, subject, _, key, expires = CLAIMS.unpack(raw[: CLAIMS.size])
    raw[: CLAIMS.size] = CLAIMS.pack(kind, subject, 8, key, expires)
    assert _refused(signer, _token(raw)) == "forged"
    assert signer.verify(token, "planner", NOW).organization_id == 7


def test_a_token_opens_only_its_own_kind() -> None:
    signer = EmbedSigner(SECRET)
    editor, _ = signer.mint("editor", 5, 7, 42, NOW)
    planner, _ = signer.mint("planner", 5, 7, 42, NOW)
    assert _refused(signer, editor, "planner") == "wrong_kind"
    assert _refused(signer, planner, "editor") == "wrong_kind"
    assert signer.verify(editor, "editor", NOW).kind == "editor"


def test_the_previous_secret_verifies_until_its_tokens_expire() -> None:
    old_token, _ = EmbedSigner(OLD_SECRET).mint("planner", 1, 7, 42, NOW)
    rotated = EmbedSigner(SECRET, previous=OLD_SECRET, rotated_at=NOW)
    assert rotated.verify(old_token, "planner", NOW + timedelta(minutes=14)).subject_id == 1
    assert _refused(rotated, old_token, at=NOW + timedelta(minutes=15)) == "expired"
    assert _refused(EmbedSigner(SECRET), old_token) == "forged"
    new_token, _ = rotated.mint("planner", 1, 7, 42, NOW)
    assert _refused(EmbedSigner(OLD_SECRET), new_token) == "forged"


def test_the_previous_secret_signs_nothing_that_opens_once_its_rotation_is_15_minutes_old() -> None:
    """A leaked old secret opened pages for as long as it stayed configured: tokens it signed
    after the rotation verified 16 and 17 minutes later."""
    rotated = EmbedSigner(SECRET, previous=OLD_SECRET, rotated_at=NOW)
    later = NOW + timedelta(minutes=16)
    late_token, _ = EmbedSigner(OLD_SECRET).mint("planner", 1, 7, 42, later)
    assert _refused(rotated, late_token, at=later) == "forged"
    new_token, _ = rotated.mint("planner", 1, 7, 42, later)
    assert rotated.verify(new_token, "planner", later).subject_id == 1


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError):
        EmbedSigner(b"short")
    with pytest.raises(ValueError):
        EmbedSigner(SECRET, previous=b"short")


def test_the_secret_comes_from_settings_or_is_made_once(tmp_path: Path) -> None:
    now = datetime.now(UTC)  # a rotation configured now is honoured from now on
    made = embed_signer(Settings(data_dir=tmp_path))
    token, _ = made.mint("editor", 1, 2, 3, now)
    assert (tmp_path / SECRET_FILE).exists()
    assert embed_signer(Settings(data_dir=tmp_path)).verify(token, "editor", now).subject_id == 1
    configured = Settings(data_dir=tmp_path, embed_secret="n" * 20)
    assert _refused(embed_signer(configured), token, "editor", at=now) == "forged"
    secret = (tmp_path / SECRET_FILE).read_text().strip()
    rotated = Settings(data_dir=tmp_path, embed_secret="n" * 20, embed_previous_secret=secret)
    assert embed_signer(rotated).verify(token, "editor", now).organization_id == 2
    # Started again, a gateway honours the old secret from the first start, not anew: restarted
    # 20 minutes after it, it honoured a leaked old secret for another 15 minutes every time.
    (first_start,) = tmp_path.glob("embed-rotated-*")
    first_start.write_text((now - timedelta(minutes=20)).isoformat())
    late_token, _ = EmbedSigner(secret.encode()).mint("editor", 1, 2, 3, now)
    assert _refused(embed_signer(rotated), late_token, "editor", at=now) == "forged"
    with pytest.raises(SystemExit):
        embed_signer(Settings(data_dir=tmp_path, embed_secret="short"))
