#!/usr/bin/env bash
# Makes a Docker engine available on a fresh machine of this project's kind (Debian, root):
# installs docker.io, docker-compose (v1) and debootstrap when missing, and starts dockerd with
# loopback-safe flags (no bridge, no iptables: containers use host networking) when none
# answers.
set -euo pipefail

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  echo "Docker engine answers"
  exit 0
fi
echo "starting dockerd"
nohup dockerd --bridge=none --iptables=false --ip6tables=false >/var/log/dockerd.log 2>&1 &
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    echo "Docker engine answers"
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not come up; see /var/log/dockerd.log" >&2
exit 1
