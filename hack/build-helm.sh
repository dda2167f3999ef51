#!/usr/bin/env bash
# Builds helm from its Go module (hack/helm pins it) and caches it by version outside the
# work tree. Prints the binary's path on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${BBWO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bitbucket-webhook-operator}
version=$(grep -oE 'helm.sh/helm/v3 v[^ ]+' "$here/helm/go.mod" | head -n1 | cut -d' ' -f2)
# The Kubernetes version helm assumes without a cluster (`helm template`, `helm lint`):
# taken from the client-go it is built with, as helm's own release builds do. Left unset,
# it is 1.20 and the chart's kubeVersion (>=1.33) refuses to render offline.
k8s_minor=$(grep -oE 'k8s.io/client-go v0\.[0-9]+' "$here/helm/go.mod" | head -n1 | cut -d. -f3)
out="$CACHE/helm-$version-k8s1.$k8s_minor"
if [ ! -x "$out/helm" ]; then
  echo "helm: building $version from its Go module (a minute or two on a cold cache)" >&2
  mkdir -p "$out"
  start=$(date +%s)
  (cd "$here/helm" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
    go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor" \
      -o "$out/helm.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$out/helm.tmp" "$out/helm"
  echo "helm: built in $(( $(date +%s) - start ))s" >&2
fi
echo "$out/helm"
