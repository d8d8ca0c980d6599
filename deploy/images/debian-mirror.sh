#!/usr/bin/env bash
# Prints the Debian mirror this machine's apt already uses (deb822 or one-line sources), so that
# no registry's host name is written into the repository. Exits 1 when there is none.
set -euo pipefail
mirror=$(
  { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'
  } | grep -v security | head -n 1 || true
)
if [ -z "$mirror" ]; then
  echo "no Debian mirror found in this machine's apt sources" >&2
  exit 1
fi
echo "$mirror"
