#!/usr/bin/env bash
# Installs the `docker compose` v2 plugin when missing, beside docker-compose v1, on Debian
# bookworm machines (this project's kind), whose own docker-compose package is v1. The plugin
# comes from Debian trixie's docker-compose package, downloaded through apt from the mirror the
# machine already uses, with a private source list (so the archive's signature is checked and
# the system's sources stay as they are); only its statically linked binary is installed, as a
# CLI plugin.
set -euo pipefail

PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
if docker compose version >/dev/null 2>&1; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
chown -R _apt:root "$work" # apt downloads as its own unprivileged user
mirror=$("$(dirname "$0")/../images/debian-mirror.sh")
echo "deb $mirror trixie main" >"$work/trixie.list"
apt_options=(
  -o "Dir::Etc::SourceList=$work/trixie.list"
  -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache::Archives=$work/archives"
  -o "Dir::Cache::pkgcache="
  -o "Dir::Cache::srcpkgcache="
)
echo "installing the docker compose v2 plugin (Debian trixie's docker-compose)"
apt-get "${apt_options[@]}" update -qq
(cd "$work" && apt-get "${apt_options[@]}" download -qq docker-compose)
dpkg-deb -x "$work"/docker-compose_*.deb "$work/root"
install -D -m 0755 "$work/root/usr/libexec/docker/cli-plugins/docker-compose" \
  "$PLUGIN_DIR/docker-compose"
docker compose version
