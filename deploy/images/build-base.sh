#!/usr/bin/env bash
# Builds a local Debian base image with Python 3 for machines that cannot pull from a registry.
# Usage: deploy/images/build-base.sh [IMAGE]   (default straightline/base:bookworm)
# Skips the work when the image exists. Needs root, debootstrap and a Docker engine.
set -euo pipefail
image=${1:-straightline/base:bookworm}

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image exists"
  exit 0
fi

mirror=$("$(dirname "$0")/debian-mirror.sh")

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm from $mirror into $rootfs"
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >/dev/null

# pip inside the image trusts the machine's CA bundle (some networks re-sign TLS).
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$rootfs/etc/pip.conf"

tar -C "$rootfs" -c . | docker import - "$image" >/dev/null
echo "built $image"
