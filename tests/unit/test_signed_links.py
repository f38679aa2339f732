"""E-ticket links: a token opens only the ticket and code it was signed for, until it expires;
anything changed in it, a wrong secret or purpose, or another code (a transfer's) refuses it.
The secret is made once into the data folder, readable by its owner only, and reused."""

from __future__ import annotations

import base64
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.secret_files import kept
from infra.settings import Settings
from infra.signed_links import SECRET_FILE, LinkClaims, LinkRefused, LinkSigner, link_secret

SECRET = b"s" * 32
NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
CODE = "ABCD1234EFGH"


def _refused(signer: LinkSigner, token: str, code: str = CODE, at: datetime = NOW) -> str:
    with pytest.raises(LinkRefused) as refused:
        signer.verify(token, code, at)
    return refused.value.reason


def test_a_link_opens_the_ticket_and_code_it_was_signed_for() -> None:
    signer = LinkSigner(SECRET)
    claims = LinkClaims(ticket_id=4711, generation=2, expires_at=NOW + timedelta(hours=1))
    token = signer.sign(claims, CODE)
    assert len(token) == 48 and "=" not in token
    assert signer.claims(token) == claims
    assert signer.verify(token, CODE, NOW) == claims
    assert signer.sign(claims, CODE) == token  # stable: the resource shows the same link


def test_a_link_without_expiry_never_expires() -> None:
    signer = LinkSigner(SECRET)
    token = signer.sign(LinkClaims(1, 0), CODE)
    assert signer.verify(token, CODE, NOW + timedelta(days=36500)).expires_at is None


def test_every_changed_byte_is_refused() -> None:
    signer = LinkSigner(SECRET)
    raw = base64.urlsafe_b64decode(signer.sign(LinkClaims(42, 0, NOW + timedelta(days=1)), CODE))
    for i in range(len(raw)):
        changed = bytearray(raw)
        changed[i] ^= 0x01
        token = base64.urlsafe_b64encode(bytes(changed)).decode()
        assert _refused(signer, token) in ("forged", "malformed"), i


def test_claims_rewritten_with_a_valid_looking_mac_are_forged() -> None:
    """Another ticket's id, or a later generation, on the MAC of this one."""
    signer = LinkSigner(SECRET)
    token = signer.sign(LinkClaims(42, 0), CODE)
    mac = base64.urlsafe_b64decode(token)[20:]
    for other in (LinkClaims(43, 0), LinkClaims(42, 1)):
        packed = base64.urlsafe_b64decode(signer.sign(other, CODE))[:20]
        assert _refused(signer, base64.urlsafe_b64encode(packed + mac).decode()) == "forged"


def test_the_code_of_another_generation_does_not_open_it() -> None:
    """A transfer gives the ticket a new code: the old link no longer verifies for it."""
    signer = LinkSigner(SECRET)
    token = signer.sign(LinkClaims(42, 0), CODE)
    assert _refused(signer, token, code="NEWCODE00000") == "forged"
    assert _refused(signer, token, code=CODE.lower()) == "forged"


def test_an_expired_link_is_refused_as_expired() -> None:
    signer = LinkSigner(SECRET)
    token = signer.sign(LinkClaims(42, 0, NOW), CODE)
    assert signer.verify(token, CODE, NOW - timedelta(seconds=1))
    assert _refused(signer, token, at=NOW) == "expired"


def test_another_secret_or_purpose_does_not_open_it() -> None:
    token = LinkSigner(SECRET).sign(LinkClaims(42, 0), CODE)
    assert _refused(LinkSigner(b"t" * 32), token) == "forged"
    assert _refused(LinkSigner(SECRET, purpose="receipt"), token) == "forged"


@pytest.mark.parametrize(
    "token", ["", "abc", "A" * 47, "A" * 49, "A" * 47 + "=", "A" * 47 + "/", "Ä" * 48]
)
def test_what_is_not_a_token_is_malformed(token: str) -> None:
    signer = LinkSigner(SECRET)
    with pytest.raises(LinkRefused) as refused:
        signer.claims(token)
    assert refused.value.reason == "malformed"


def test_an_expiry_out_of_range_is_malformed_not_an_error() -> None:
    packed = (42).to_bytes(8, "big") + (0).to_bytes(4, "big") + (2**62).to_bytes(8, "big")
    token = base64.urlsafe_b64encode(packed + b"\0" * 16).decode()
    with pytest.raises(LinkRefused) as refused:
        LinkSigner(SECRET).claims(token)
    assert refused.value.reason == "malformed"


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        LinkSigner(b"short")


def test_the_secret_is_made_once_into_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = link_secret(settings)
    assert len(first) >= 32
    path = tmp_path / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert link_secret(settings) == first
    assert link_secret(Settings(data_dir=tmp_path, link_secret="x" * 20)) == b"x" * 20
    with pytest.raises(SystemExit):
        link_secret(Settings(data_dir=tmp_path, link_secret="short"))


def test_processes_making_a_secret_at_once_agree_on_one(tmp_path: Path) -> None:
    path = tmp_path / "folder" / "secret"
    results: list[bytes] = []
    start = threading.Barrier(8)

    def make(i: int) -> None:
        start.wait(timeout=10)
        results.append(kept(path, lambda: f"secret {i}".encode()))

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(results) == 8 and len(set(results)) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]
