"""A development CA and a certificate per StraightLine identity, for mutual TLS.

    python -m straightline_common.devcerts DIR [--days 30] [--host NAME ...] [--if-absent]
        [--owner NAME=UID:GID ...]

Writes DIR/ca.pem (and ca.key, to sign more later) and, per identity, DIR/<name>.pem and
DIR/<name>.key (mode 0600). Each certificate names its role in a SAN URI,
spiffe://straightline/<role>/<name>, which is what the services authorize on; and, to be a
server's too, the hosts it may be reached at: localhost, 127.0.0.1 and the compose service
names, plus every --host. Run it again to rotate: services re-read changed files. With
--if-absent it leaves a directory that has a CA already as it is (compose runs it so); each
--owner gives an identity's key to the user its service runs as (the placer's image runs as
nobody, 65534).
Only the Python `cryptography` package is needed, no openssl binary.
"""

import argparse
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from straightline_common.auth import SPIFFE_PREFIX

# File name -> the SAN URI's role/name. Servers that call no one get a role no method allows.
IDENTITIES = {
    "placer": "placer/placer",
    "placer-2": "placer/placer-2",
    "devrunner": "service/devrunner",
    "adapter-flask": "adapter/flask",
    "adapter-docker": "adapter/docker",
    "adapter-serverless": "adapter/serverless",
    "operator": "operator/operator",
    "client": "client/client",
}
HOSTS: tuple[str, ...] = ("localhost", "placer", "placer-2", "devrunner", "adapter-flask")
HOSTS += ("adapter-docker", "adapter-serverless")
# Every certificate serves and calls (the placer is both).
_BOTH_ENDS = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def make_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = make_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("StraightLine development CA"))
        .issuer_name(_name("StraightLine development CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    identity: str,
    hosts: list[str],
    days: float,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A certificate for `identity` (role/name); `days` may be negative (an expired one)."""
    key = make_key()
    now = datetime.datetime.now(datetime.UTC)
    start, end = sorted((now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)))
    if days < 0:
        start = end - datetime.timedelta(days=1)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(SPIFFE_PREFIX + identity)]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(identity))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def make_all(directory: Path, days: int = 30, hosts: tuple[str, ...] = ()) -> None:
    directory.mkdir(parents=True, exist_ok=True)  # certificates are public; keys are 0600
    ca_key, ca_cert = make_ca(days)
    write_key(directory / "ca.key", ca_key)
    write_cert(directory / "ca.pem", ca_cert)
    everywhere = [*HOSTS, "127.0.0.1", *hosts]
    for file_name, identity in IDENTITIES.items():
        key, cert = make_leaf(ca_key, ca_cert, identity, everywhere, days)
        write_key(directory / f"{file_name}.key", key)
        write_cert(directory / f"{file_name}.pem", cert)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--host", action="append", default=[], help="another name or IP")
    parser.add_argument("--if-absent", action="store_true", help="keep an existing CA's files")
    parser.add_argument("--owner", action="append", default=[], help="NAME=UID:GID of a key")
    args = parser.parse_args()
    if args.if_absent and (args.directory / "ca.pem").exists():
        print(f"{args.directory} has certificates already; kept them")
    else:
        make_all(args.directory, args.days, tuple(args.host))
        print(f"wrote a CA and {len(IDENTITIES)} certificates to {args.directory}")
    for owner in args.owner:
        name, _, ids = owner.partition("=")
        uid, _, gid = ids.partition(":")
        os.chown(args.directory / f"{name}.key", int(uid), int(gid or uid))


if __name__ == "__main__":
    main()
