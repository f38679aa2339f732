"""Wallet passes as a wallet checks them. The .pkpass: its zip layout, a manifest whose SHA-1s
match every file, and a detached PKCS#7 signature of the manifest that verifies (parsed and
checked with `cryptography`, and by `openssl smime -verify` where the binary exists) with the
pass certificate under its intermediate. The Google JWT: RS256 over its header and claims,
checked with the public key, and the claims Google reads."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import stat
import struct
import subprocess
import zipfile
import zlib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from infra.settings import Settings
from infra.wallet import dev_keys
from infra.wallet.apple import AppleIdentity, build_pkpass, load_certificate
from infra.wallet.google import GoogleIdentity, save_jwt, save_url
from infra.wallet.images import ticket_mark
from infra.wallet.keys import WALLET_FOLDER, apple_identity, google_identity
from infra.wallet.ticket import WalletTicket

STARTS = datetime(2030, 6, 1, 18, 0, tzinfo=UTC)
NOW = datetime(2030, 5, 1, tzinfo=UTC)
SEATED = WalletTicket(
    ticket_id=4711,
    generation=0,
    code="K7Q2M9XA4B1C",
    voided=False,
    organization_name="Koncerthuset",
    color="#1E3A8A",
    product_key="event-12",
    product_name="Nordic Nights",
    ticket_type_name="Parket",
    starts_at=STARTS,
    visit_date=None,
    venue_name="Store Sal",
    venue_address="Ørestads Blvd. 13, 2300, København",
    section_name="Parket",
    row="B",
    seat_number=14,
    holder_name="Ida Ørsted",
    scannable_until=datetime(2030, 6, 2, 0, 0, tzinfo=UTC),
)
STANDING = msgspec.structs.replace(
    SEATED, section_name=None, row=None, seat_number=None, color="#FDE68A"
)
FILES = {"pass.json", "manifest.json", "signature", "icon.png", "icon@2x.png", "logo.png"}


@pytest.fixture(scope="module")
def apple() -> AppleIdentity:
    return dev_keys.apple(None)


@pytest.fixture(scope="module")
def google() -> GoogleIdentity:
    return dev_keys.google(None)


def _open(pkpass: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(pkpass)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


# ---- a minimal DER reader: enough of PKCS#7 SignedData to check its signer's signature ----


def _tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end) of the element at `at`."""
    tag, length = data[at], data[at + 1]
    at += 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[at : at + size], "big")
        at += size
    return tag, at, at + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, end) of each element between start and end."""
    found = []
    while start < end:
        tag, content, stop = _tlv(data, start)
        found.append((tag, start, content, stop))
        start = stop
    return found


def _signer_info(signature: bytes) -> tuple[bytes, bytes]:
    """The signer's signed attributes (as the signature covers them) and its signature."""
    _, content, end = _tlv(signature, 0)  # ContentInfo
    _, (tag, _, explicit, stop) = _children(signature, content, end)
    assert tag == 0xA0
    ((_, _, signed_data, signed_end),) = _children(signature, explicit, stop)
    *_, (set_tag, _, infos, infos_end) = _children(signature, signed_data, signed_end)
    assert set_tag == 0x31  # signerInfos
    ((_, _, info, info_end),) = _children(signature, infos, infos_end)
    parts = _children(signature, info, info_end)
    (attrs,) = [p for p in parts if p[0] == 0xA0]
    _, attrs_start, _, attrs_end = attrs
    signed_attrs = b"\x31" + signature[attrs_start + 1 : attrs_end]  # signed as a SET OF
    _, _, value, value_end = parts[-1]
    return signed_attrs, signature[value:value_end]


MESSAGE_DIGEST = bytes.fromhex("06092a864886f70d010904")  # OID 1.2.840.113549.1.9.4
SIGNING_TIME = bytes.fromhex("06092a864886f70d010905")


def _verify_signature(signature: bytes, manifest: bytes, apple: AppleIdentity) -> None:
    signed_attrs, value = _signer_info(signature)
    digest = hashlib.sha256(manifest).digest()
    at = signed_attrs.index(MESSAGE_DIGEST)
    assert digest in signed_attrs[at : at + 64], "messageDigest is not the manifest's SHA-256"
    assert SIGNING_TIME in signed_attrs
    key = apple.certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(value, signed_attrs, padding.PKCS1v15(), hashes.SHA256())


# ---- the .pkpass ---------------------------------------------------------------------------


def test_the_pkpass_has_the_layout_a_wallet_expects(apple: AppleIdentity) -> None:
    files = _open(build_pkpass(SEATED, apple))
    assert set(files) >= FILES and set(files) - FILES <= {"logo@2x.png"}
    for name in ("icon.png", "icon@2x.png", "logo.png"):
        assert files[name].startswith(b"\x89PNG\r\n\x1a\n"), name


def test_the_manifest_lists_every_file_with_its_sha1(apple: AppleIdentity) -> None:
    files = _open(build_pkpass(SEATED, apple))
    manifest = json.loads(files["manifest.json"])
    assert set(manifest) == set(files) - {"manifest.json", "signature"}
    for name, digest in manifest.items():
        assert hashlib.sha1(files[name]).hexdigest() == digest, name


def test_the_signature_is_the_pass_certificates_over_the_manifest(apple: AppleIdentity) -> None:
    files = _open(build_pkpass(SEATED, apple))
    _verify_signature(files["signature"], files["manifest.json"], apple)
    carried = pkcs7.load_der_pkcs7_certificates(files["signature"])
    assert apple.certificate in carried and apple.wwdr in carried
    apple.certificate.verify_directly_issued_by(apple.wwdr)
    with pytest.raises(AssertionError):
        _verify_signature(files["signature"], files["manifest.json"] + b" ", apple)


def test_a_signature_over_another_manifest_does_not_verify(apple: AppleIdentity) -> None:
    files = _open(build_pkpass(SEATED, apple))
    other = _open(build_pkpass(STANDING, apple))
    _, value = _signer_info(other["signature"])
    key = apple.certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    own_attrs, _ = _signer_info(files["signature"])
    with pytest.raises(InvalidSignature):
        key.verify(value, own_attrs, padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
def test_openssl_verifies_the_signature(apple: AppleIdentity, tmp_path: Path) -> None:
    files = _open(build_pkpass(SEATED, apple))
    for name in ("signature", "manifest.json"):
        (tmp_path / name).write_bytes(files[name])
    (tmp_path / "wwdr.pem").write_bytes(apple.wwdr.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "other.json").write_bytes(files["manifest.json"].replace(b"a", b"b", 1))
    common = ["openssl", "smime", "-verify", "-inform", "DER", "-in", "signature"]
    checks = {
        ("-noverify", "-content", "manifest.json"): 0,
        ("-CAfile", "wwdr.pem", "-purpose", "any", "-content", "manifest.json"): 0,
        ("-noverify", "-content", "other.json"): 4,
    }
    for options, status in checks.items():
        done = subprocess.run(
            [*common, *options, "-out", "/dev/null"],
            cwd=tmp_path,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == status, (options, done.stderr)


def test_pass_json_describes_the_seated_ticket(apple: AppleIdentity) -> None:
    document = json.loads(_open(build_pkpass(SEATED, apple))["pass.json"])
    assert document["formatVersion"] == 1
    assert document["passTypeIdentifier"] == dev_keys.PASS_TYPE_ID
    assert document["teamIdentifier"] == dev_keys.TEAM_ID
    assert document["serialNumber"] == "4711-0"
    assert document["organizationName"] == "Koncerthuset"
    assert document["description"]
    assert document["backgroundColor"] == "rgb(30, 58, 138)"
    assert document["foregroundColor"] == "rgb(255, 255, 255)"
    assert document["relevantDate"] == "2030-06-01T18:00:00+00:00"
    assert "voided" not in document
    (barcode,) = document["barcodes"]
    assert barcode["format"] == "PKBarcodeFormatQR" and barcode["message"] == "K7Q2M9XA4B1C"
    fields = {
        f["key"]: f["value"]
        for group in document["eventTicket"].values()
        for f in group
        if isinstance(f, dict)
    }
    assert fields["event"] == "Nordic Nights"
    assert fields["date"] == "2030-06-01T18:00:00+00:00"
    assert fields["venue"] == "Store Sal"
    assert fields["holder"] == "Ida Ørsted"
    assert (fields["section"], fields["row"], fields["seat"]) == ("Parket", "B", "14")


def test_a_standing_ticket_is_general_admission_in_dark_text(apple: AppleIdentity) -> None:
    document = json.loads(_open(build_pkpass(STANDING, apple))["pass.json"])
    auxiliary = document["eventTicket"]["auxiliaryFields"]
    assert [f["value"] for f in auxiliary] == ["General admission"]
    assert document["foregroundColor"] == "rgb(0, 0, 0)"


def test_an_attraction_visit_without_start_has_its_day_and_no_relevant_date(
    apple: AppleIdentity,
) -> None:
    visit = msgspec.structs.replace(STANDING, starts_at=None, visit_date=date(2030, 7, 4))
    document = json.loads(_open(build_pkpass(visit, apple))["pass.json"])
    assert "relevantDate" not in document
    assert document["eventTicket"]["headerFields"][0]["value"] == "2030-07-04"


def test_a_transfer_makes_a_new_pass_and_a_refund_a_void_one(apple: AppleIdentity) -> None:
    moved = msgspec.structs.replace(SEATED, generation=1, code="NEW0CODE0000")
    document = json.loads(_open(build_pkpass(moved, apple))["pass.json"])
    assert document["serialNumber"] == "4711-1"
    assert document["barcodes"][0]["message"] == "NEW0CODE0000"
    refunded = msgspec.structs.replace(SEATED, voided=True)
    assert json.loads(_open(build_pkpass(refunded, apple))["pass.json"])["voided"] is True


def _png_size(data: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_images_are_png_in_the_organizations_colour() -> None:
    data = ticket_mark(58, 58, (30, 58, 138))
    assert _png_size(data) == (58, 58)
    (idat_at,) = [i for i in range(len(data)) if data[i : i + 4] == b"IDAT"]
    length = struct.unpack(">I", data[idat_at - 4 : idat_at])[0]
    rows = zlib.decompress(data[idat_at + 4 : idat_at + 4 + length])
    assert len(rows) == 58 * (1 + 58 * 3)
    middle = rows[29 * (1 + 58 * 3) + 1 + 29 * 3 :][:3]
    assert middle == bytes((30, 58, 138))


# ---- identities from settings ----------------------------------------------------------------


def test_without_certificates_a_development_identity_is_made_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first, again = apple_identity(settings), apple_identity(settings)
    assert first.development and first.certificate == again.certificate
    path = tmp_path / WALLET_FOLDER / dev_keys.APPLE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert google_identity(settings).key.private_numbers() == (
        google_identity(settings).key.private_numbers()
    )


def test_real_certificates_come_from_their_files(tmp_path: Path, apple: AppleIdentity) -> None:
    pem = serialization.Encoding.PEM
    cert, key, wwdr = tmp_path / "pass.pem", tmp_path / "pass.key", tmp_path / "wwdr.cer"
    cert.write_bytes(apple.certificate.public_bytes(pem))
    key.write_bytes(
        apple.key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    wwdr.write_bytes(apple.wwdr.public_bytes(serialization.Encoding.DER))  # as Apple ships it
    paths = {
        "apple_pass_certificate": str(cert),
        "apple_pass_key": str(key),
        "apple_wwdr_certificate": str(wwdr),
    }
    found = apple_identity(Settings(data_dir=tmp_path, **paths))
    assert not found.development and found.wwdr == apple.wwdr
    # The ids from the certificate's subject unless the settings name them.
    assert (found.pass_type_id, found.team_id) == (dev_keys.PASS_TYPE_ID, dev_keys.TEAM_ID)
    named = apple_identity(
        Settings(data_dir=tmp_path, apple_pass_type_id="pass.x", apple_team_id="T1", **paths)
    )
    assert (named.pass_type_id, named.team_id) == ("pass.x", "T1")
    with pytest.raises(SystemExit):
        apple_identity(Settings(data_dir=tmp_path, apple_pass_certificate=str(cert)))
    assert load_certificate(wwdr.read_bytes()) == apple.wwdr


def test_a_service_account_file_gives_the_google_identity(
    tmp_path: Path, google: GoogleIdentity
) -> None:
    private = google.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = {
        "type": "service_account",
        "client_email": "wallet@example.iam.gserviceaccount.com",
        "private_key_id": "k1",
        "private_key": private,
    }
    path = tmp_path / "account.json"
    path.write_text(json.dumps(account))
    settings = Settings(data_dir=tmp_path, google_service_account_file=str(path))
    with pytest.raises(SystemExit):
        google_identity(settings)
    found = google_identity(
        Settings(
            data_dir=tmp_path,
            google_service_account_file=str(path),
            google_wallet_issuer_id="3388000000012345678",
        )
    )
    assert found.service_account == account["client_email"] and found.key_id == "k1"
    header = _decode(save_jwt(SEATED, found, [], NOW).split(".")[0])
    assert header == {"alg": "RS256", "typ": "JWT", "kid": "k1"}


# ---- the Google Wallet JWT -------------------------------------------------------------------


def _decode(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _verified(jwt: str, google: GoogleIdentity) -> dict[str, Any]:
    header, claims, signature = jwt.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    google.key.public_key().verify(
        raw, f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    assert _decode(header)["alg"] == "RS256"
    return dict(_decode(claims))


def test_the_jwt_is_signed_rs256_with_the_service_account_key(google: GoogleIdentity) -> None:
    jwt = save_jwt(SEATED, google, ["https://tickets.example.com"], NOW)
    claims = _verified(jwt, google)
    assert claims["iss"] == google.service_account
    assert claims["aud"] == "google" and claims["typ"] == "savetowallet"
    assert claims["origins"] == ["https://tickets.example.com"]
    assert claims["iat"] == int(NOW.timestamp())
    assert save_url(jwt) == f"https://pay.google.com/gp/v/save/{jwt}"
    header, _, signature = jwt.split(".")
    forged = dict(claims, payload={"eventTicketObjects": []})
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        _verified(f"{header}.{forged_body}.{signature}", google)
    with pytest.raises(InvalidSignature):
        _verified(jwt, dev_keys.google(None))  # another key


def test_the_jwt_carries_the_event_ticket_object_and_class(google: GoogleIdentity) -> None:
    payload = _verified(save_jwt(SEATED, google, [], NOW), google)["payload"]
    (ticket,) = payload["eventTicketObjects"]
    (event,) = payload["eventTicketClasses"]
    assert ticket["id"] == f"{dev_keys.ISSUER_ID}.4711-0"
    assert ticket["classId"] == event["id"] == f"{dev_keys.ISSUER_ID}.event-12"
    assert ticket["state"] == "ACTIVE"
    assert ticket["barcode"] == {
        "type": "QR_CODE",
        "value": "K7Q2M9XA4B1C",
        "alternateText": "K7Q2M9XA4B1C",
    }
    assert ticket["ticketHolderName"] == "Ida Ørsted"
    seat = {k: v["defaultValue"]["value"] for k, v in ticket["seatInfo"].items()}
    assert seat == {"section": "Parket", "row": "B", "seat": "14"}
    assert event["eventName"]["defaultValue"]["value"] == "Nordic Nights"
    assert event["dateTime"]["start"] == "2030-06-01T18:00:00+00:00"
    assert event["venue"]["name"]["defaultValue"]["value"] == "Store Sal"


def test_a_refunded_ticket_is_inactive_and_a_transferred_one_a_new_object(
    google: GoogleIdentity,
) -> None:
    refunded = msgspec.structs.replace(SEATED, voided=True)
    (ticket,) = _verified(save_jwt(refunded, google, [], NOW), google)["payload"][
        "eventTicketObjects"
    ]
    assert ticket["state"] == "INACTIVE"
    moved = msgspec.structs.replace(SEATED, generation=1, code="NEW0CODE0000")
    (ticket,) = _verified(save_jwt(moved, google, [], NOW), google)["payload"]["eventTicketObjects"]
    assert ticket["id"].endswith(".4711-1") and ticket["barcode"]["value"] == "NEW0CODE0000"


def test_a_standing_ticket_is_general_admission_on_google(google: GoogleIdentity) -> None:
    (ticket,) = _verified(save_jwt(STANDING, google, [], NOW), google)["payload"][
        "eventTicketObjects"
    ]
    assert ticket["seatInfo"] == {
        "section": {"defaultValue": {"language": "en", "value": "General admission"}}
    }


def test_development_certificates_are_marked_as_such(apple: AppleIdentity) -> None:
    name = apple.wwdr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert "development" in str(name)
