"""Certificates as a rotation test needs them: a new one written over a service's files, and
the one a server presents to a new connection."""

import socket
import ssl

from cryptography import x509

from straightline_common import devcerts, tls


def rotate(directory, name: str) -> x509.Certificate:
    """A new certificate and key for `name` (as devcerts names its files), from the same CA,
    written over the old ones; returns the new certificate."""
    ca_key = devcerts.serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    identity = devcerts.IDENTITIES[name]
    key, cert = devcerts.make_leaf(ca_key, ca_cert, identity, ["127.0.0.1"], days=1)
    devcerts.write_key(directory / f"{name}.key", key)
    devcerts.write_cert(directory / f"{name}.pem", cert)
    return cert


def served_certificate(address: str, client: tls.TlsFiles, alpn: str = "") -> x509.Certificate:
    """The certificate the server at `address` presents to a new connection."""
    context = ssl.create_default_context(cafile=str(client.ca))
    context.load_cert_chain(str(client.cert), str(client.key))
    if alpn:
        context.set_alpn_protocols([alpn])
    host, _, port = address.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as secured,
    ):
        der = secured.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)
