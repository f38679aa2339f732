"""The keys behind what a ticket's holder gets outside the API: the e-ticket links' secret and
the Apple and Google wallet identities, real ones from settings or development ones."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.settings import Settings
from infra.signed_links import LinkSigner, link_secret
from infra.wallet import dev_keys
from infra.wallet.apple import AppleIdentity
from infra.wallet.google import GoogleIdentity

WALLET_FOLDER = "wallet"


@dataclass(frozen=True)
class HandoutKeys:
    """`apple` and `google` give the identities (made on first use for development);
    `public_url`: the address holders reach the service at, for e-ticket links and the
    origins of Google's save button (empty: the address each request came to)."""

    links: LinkSigner
    apple: Callable[[], AppleIdentity]
    google: Callable[[], GoogleIdentity]
    public_url: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, public_url: str) -> HandoutKeys:
        """Read (or made into the data folder) now, so a missing file stops the start."""
        apple, google = apple_identity(settings), google_identity(settings)
        return cls(LinkSigner(link_secret(settings)), lambda: apple, lambda: google, public_url)

    @classmethod
    def development(cls) -> HandoutKeys:
        """Kept in memory, one set for every gateway this process starts (tests, benchmarks),
        each identity made the first time a pass needs it."""
        return _in_memory()


@functools.cache
def _in_memory() -> HandoutKeys:
    return HandoutKeys(
        LinkSigner(secrets.token_bytes(32)),
        functools.cache(lambda: dev_keys.apple(None)),
        functools.cache(lambda: dev_keys.google(None)),
    )


def apple_identity(settings: Settings) -> AppleIdentity:
    paths = (
        settings.apple_pass_certificate,
        settings.apple_pass_key,
        settings.apple_wwdr_certificate,
    )
    ids = (settings.apple_pass_type_id, settings.apple_team_id)
    if not any(paths):
        return dev_keys.apple(settings.data_dir / WALLET_FOLDER, *ids)
    if not all(paths):
        raise SystemExit(
            "Apple Wallet needs LINJERUM_APPLE_PASS_CERT, LINJERUM_APPLE_PASS_KEY and"
            " LINJERUM_APPLE_WWDR_CERT together"
        )
    certificate, key, wwdr = (Path(p).read_bytes() for p in paths)
    return AppleIdentity.from_pem(certificate, key, wwdr, *ids)


def google_identity(settings: Settings) -> GoogleIdentity:
    issuer = settings.google_wallet_issuer_id
    if not settings.google_service_account_file:
        return dev_keys.google(settings.data_dir / WALLET_FOLDER, issuer)
    if not issuer:
        raise SystemExit(
            "Google Wallet needs LINJERUM_GOOGLE_WALLET_ISSUER_ID with the service account"
        )
    return GoogleIdentity.from_service_account(Path(settings.google_service_account_file), issuer)
