"""Mutual TLS for every gRPC hop (and the model server's HTTPS): one deployment CA signs a
certificate per service and per client, whose SAN URI names its role
(`spiffe://straightline/<role>/<name>`, see `auth.py`).

A process is configured with its own certificate and key and the CA (`--tls-cert`,
`--tls-key`, `--tls-client-ca`, or STRAIGHTLINE_TLS_CERT / _KEY / _CLIENT_CA): as a server it
requires a client certificate signed by the CA; as a client it presents its certificate and
trusts only servers the CA signed. The files are read again when they change, so rotating a
certificate needs no restart: new connections use the new one. Without these settings,
traffic is plaintext and identities are proved by bearer tokens (loopback development).
"""

import logging
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509

from straightline_common.auth import Identity, identity_from_uri
from straightline_common.config import ConfigError, Setting
from straightline_common.errors import Unauthenticated

log = logging.getLogger(__name__)

CERT_ENV, KEY_ENV, CA_ENV = (
    "STRAIGHTLINE_TLS_CERT",
    "STRAIGHTLINE_TLS_KEY",
    "STRAIGHTLINE_TLS_CLIENT_CA",
)
TLS_SETTINGS = (
    Setting("tls_cert", CERT_ENV, str, "", "PEM certificate of this process (enables mTLS)"),
    Setting("tls_key", KEY_ENV, str, "", "PEM private key of that certificate"),
    Setting("tls_client_ca", CA_ENV, str, "", "PEM CA that signs every peer's certificate"),
)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()

    def stamp(self) -> tuple[float, ...]:
        return tuple(os.stat(path).st_mtime_ns for path in (self.cert, self.key, self.ca))


def tls_files(values: Mapping[str, str]) -> TlsFiles | None:
    """The files of the tls_* settings (a settings dict), None when none is set; a
    ConfigError when only some are, or one cannot be read."""
    given = [values.get(name, "") for name in ("tls_cert", "tls_key", "tls_client_ca")]
    if not any(given):
        return None
    if not all(given):
        raise ConfigError("tls_cert, tls_key and tls_client_ca go together: set all three")
    files = TlsFiles(*(Path(path) for path in given))
    for path in (files.cert, files.key, files.ca):
        if not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist or is not a file")
    return files


def tls_from_environ() -> TlsFiles | None:
    """A client's TLS files, from the STRAIGHTLINE_TLS_* variables."""
    env = os.environ
    return tls_files(
        {
            "tls_cert": env.get(CERT_ENV, ""),
            "tls_key": env.get(KEY_ENV, ""),
            "tls_client_ca": env.get(CA_ENV, ""),
        }
    )


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Requires client certificates signed by the CA; re-reads the files when they change."""
    loaded = {"stamp": files.stamp()}

    def configuration() -> grpc.ServerCertificateConfiguration:
        cert, key, ca = files.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch() -> grpc.ServerCertificateConfiguration | None:  # on every handshake
        stamp = files.stamp()
        if stamp == loaded["stamp"]:
            return None
        loaded["stamp"] = stamp
        return configuration()

    # gRPC takes None from `fetch` as "keep the current one"; its type stubs do not say so.
    return grpc.dynamic_ssl_server_credentials(
        configuration(),
        fetch,  # type: ignore[arg-type]
        require_client_authentication=True,
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    try:
        cert, key, ca = files.read()
    except OSError as error:
        raise Unauthenticated(
            f"cannot read this client's TLS files ({error.strerror}: {error.filename})"
        ) from None
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def https_server_context(files: TlsFiles) -> ssl.SSLContext:
    """HTTPS that requires a client certificate signed by the CA (TLS 1.2 or later)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    context.load_verify_locations(files.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class RotatingHttpsContext:
    """The HTTPS server context of these files, made again when they change, so that a
    rotated certificate is served from the next handshake without a restart. Files caught
    half-written keep the previous context until they load."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._stamp = files.stamp()
        self._context = https_server_context(files)
        self._lock = threading.Lock()

    def current(self) -> ssl.SSLContext:
        """The context for the next handshake."""
        with self._lock:
            try:
                stamp = self._files.stamp()
                if stamp != self._stamp:
                    self._context, self._stamp = https_server_context(self._files), stamp
                    log.info("TLS files changed; new connections get the new certificate")
            except (OSError, ssl.SSLError) as error:
                log.warning("TLS files changed but do not load (%s); kept the previous ones", error)
            return self._context


def https_client_context(files: TlsFiles) -> ssl.SSLContext:
    """HTTPS that presents this process's certificate and trusts only servers the CA signed."""
    context = ssl.create_default_context(cafile=files.ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    return context


def tls_flags(files: TlsFiles | None) -> list[str]:
    """The flags that give a service (a child process, a container) these files."""
    if files is None:
        return []
    return [
        *("--tls-cert", str(files.cert), "--tls-key", str(files.key)),
        *("--tls-client-ca", str(files.ca)),
    ]


def peer_identity(auth_context: Mapping[str, list[bytes]]) -> Identity | None:
    """The identity in the peer's certificate (its first StraightLine SAN URI), if any."""
    pems = auth_context.get("x509_pem_cert") or []
    if not pems:
        return None
    certificate = x509.load_pem_x509_certificate(pems[0])
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    for uri in names.value.get_values_for_type(x509.UniformResourceIdentifier):
        identity = identity_from_uri(uri)
        if identity is not None:
            return identity
    return None
