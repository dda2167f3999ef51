#!/usr/bin/env bash
# Builds helm from its Go module (hack/helm pins it) and caches it by version outside the
# work tree. Prints the binary's path on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${BBWO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bitbucket-webhook-operator}
version=$(grep -oE 'helm.sh/helm/v3 v[^ ]+' "$here/helm/go.mod" | head -n1 | cut -d' ' -f2)
out="$CACHE/helm-$version"
if [ ! -x "$out/helm" ]; then
  echo "helm: building $version from its Go module (a minute or two on a cold cache)" >&2
  mkdir -p "$out"
  start=$(date +%s)
  (cd "$here/helm" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
    go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" -o "$out/helm.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$out/helm.tmp" "$out/helm"
  echo "helm: built in $(( $(date +%s) - start ))s" >&2
fi
echo "$out/helm"
