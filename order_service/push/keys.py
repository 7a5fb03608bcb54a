"""The VAPID key pair (RFC 8292) the service signs its pushes with.

From ``ORDERBUS_VAPID_PRIVATE_KEY`` when set (PEM, or the base64url private number as
``web-push generate-vapid-keys`` prints it), else generated once into
``<data_dir>/vapid_private.pem`` (mode 0600). Every API worker and relay reads the same
file; two processes starting at once write it once (the first link wins). Browsers
subscribe with the public key (``GET /api/v1/push/key``): a new key pair makes every
existing subscription useless, so keep the file (it is in the backups' data dir).
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from order_service.config import Settings

KEY_FILE = "vapid_private.pem"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _from_setting(value: str) -> ec.EllipticCurvePrivateKey:
    text = value.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = b64url_decode(text)
            if len(raw) == 32:
                key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
            else:
                key = serialization.load_der_private_key(raw, password=None)
    except ValueError:
        raise ValueError("ORDERBUS_VAPID_PRIVATE_KEY is not a P-256 private key (PEM or base64url)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("ORDERBUS_VAPID_PRIVATE_KEY is not a P-256 (prime256v1) key")
    return key


def _from_file(path: Path) -> ec.EllipticCurvePrivateKey:
    if not path.exists():
        _create(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} does not hold an EC private key")
    return key


def _create(path: Path) -> None:
    """Write a new key to ``path`` unless another process just did (link is atomic)."""
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".vapid-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process was first: its key is the one
    finally:
        os.unlink(temp)


def private_key(settings: Settings) -> ec.EllipticCurvePrivateKey:
    if settings.vapid_private_key:
        return _from_setting(settings.vapid_private_key)
    return _from_file(settings.data_dir / KEY_FILE)


def vapid(settings: Settings) -> Vapid02:
    """The signer pywebpush takes."""
    return Vapid02(private_key(settings))


def public_key(settings: Settings) -> str:
    """The public key as browsers' ``applicationServerKey`` takes it: the uncompressed
    point (65 bytes), base64url without padding."""
    point = (
        private_key(settings)
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return b64url(point)
