"""Certificates made for a test: a private CA and a server certificate it signed.

Made with the ``openssl`` command (Debian's ``openssl`` package; .ci/run installs it),
valid for two days, for ``localhost`` and ``127.0.0.1``. Strict enough for Python's
default verification (CA basic constraints, key usages, key identifiers).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.processes import require_tool

SERVER_EXTENSIONS = """\
subjectAltName = DNS:localhost, IP:127.0.0.1
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA certificate clients trust (ORDERBUS_MQTT_CA_FILE)
    cert: Path  # the server's certificate chain (Mosquitto's certfile, nginx's ssl_certificate)
    key: Path  # its private key


def make_certificates(directory: Path, name: str = "server") -> Certificates:
    """A fresh CA and a certificate for localhost/127.0.0.1 signed by it, in ``directory``."""
    openssl = require_tool("openssl", "openssl", "the TLS tests make their certificates with it")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text(SERVER_EXTENSIONS)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"]
    for args in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=orderbus test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", extensions],
    ):  # fmt: skip
        result = subprocess.run([openssl, *map(str, args)], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {result.stderr}")
    return Certificates(ca, cert, key)
