#!/usr/bin/env bash
# Builds Flux's notification-controller from its Go module (pinned by hack/flux/go.mod and
# go.sum; nothing is downloaded from release pages) and caches it by version outside the
# work tree, with the module's own CRDs beside it. Prints that directory on its last line.
set -euo pipefail

CACHE=${BBWO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bitbucket-webhook-operator}
here=$(cd "$(dirname "$0")" && pwd)
module=github.com/fluxcd/notification-controller
version=$(cd "$here/flux" && go list -m -f '{{.Version}}' "$module")
out="$CACHE/flux/notification-controller-$version"

log() { echo "flux: $*" >&2; }

if [ -x "$out/notification-controller" ] && [ -d "$out/crds" ]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi
mkdir -p "$out.tmp/crds"
log "building notification-controller $version from its Go module (several minutes, once per version)"
start=$(date +%s)
(cd "$here/flux" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp/notification-controller" "$module")
src=$(cd "$here/flux" && go list -m -f '{{.Dir}}' "$module")
cp "$src"/config/crd/bases/*.yaml "$out.tmp/crds/"
chmod -R u+w "$out.tmp"
rm -rf "$out"
mv "$out.tmp" "$out"
log "built in $(( $(date +%s) - start ))s: $out"
echo "$out"
