#!/usr/bin/env bash
# buf breaking: the contracts must stay wire- and source-compatible with the previous commit of
# main. With uncommitted changes under protos/ that is HEAD; on a clean tree (CI) it is HEAD~1,
# the commit before the one under test. A clone without history has nothing to compare with.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=node_modules/.bin/buf

if ! git diff --quiet HEAD -- protos; then
  base=HEAD
elif git rev-parse -q --verify HEAD~1 >/dev/null; then
  base=HEAD~1
else
  echo "buf breaking: no previous commit to compare with (shallow clone); skipped" >&2
  exit 0
fi
"$BUF" breaking protos --against ".git#ref=${base},subdir=protos"
echo "buf breaking: protos compatible with ${base}"
