#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from Go modules (nothing is downloaded
# from release pages) and caches them by version outside the work tree.
# Prints the directory that holds the binaries on its last line.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE=${BBWO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bitbucket-webhook-operator}
here=$(cd "$(dirname "$0")" && pwd)
out="$CACHE/controlplane/kubernetes-$KUBE_VERSION-etcd-$ETCD_VERSION"

log() { echo "controlplane: $*" >&2; }

# The committed go.mod/go.sum pin the default versions; any other version gets a
# go.mod generated in a scratch copy (its checksums then come from GOSUMDB).
module_dir() { # name version-of-committed-module wanted-version generator
  local name=$1 committed=$2 wanted=$3 gen=$4
  local dir="$CACHE/controlplane/src/$name-$wanted"
  mkdir -p "$dir"
  cp "$here/controlplane/$name/go.mod" "$here/controlplane/$name/go.sum" "$dir/"
  if [ "$committed" != "$wanted" ]; then
    log "generating a go.mod for $name $wanted (the committed one pins $committed)"
    (cd "$dir" && "$gen" "$wanted")
  fi
  echo "$dir"
}

gen_kubernetes() { # rewrites go.mod for another k8s.io/kubernetes version
  local v=$1 staging=v0.${1#v1.}
  local modfile
  modfile=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  {
    echo "module bitbucket-webhook-operator/controlplane/kubernetes"
    echo
    grep -E '^(go|godebug) ' "$modfile"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    echo "replace ("
    grep -E '=> \./staging/' "$modfile" | sed -E "s#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+) => .*#\t\1 => \1 $staging#"
    echo ")"
  } > go.mod
  rm -f go.sum
  go get -tool k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kube-controller-manager
  go mod tidy
}

gen_etcd() {
  printf 'module bitbucket-webhook-operator/controlplane/etcd\n\ngo 1.25\n' > go.mod
  rm -f go.sum
  go get -tool "go.etcd.io/etcd/server/v3@$1"
  go mod tidy
}

committed_version() { # module-dir module-path
  grep -oE "^[[:space:]]*(require )?$2 v[^ ]+" "$here/controlplane/$1/go.mod" | grep -oE 'v[^ ]+$' | head -n1
}

# `current` lets the test harness find the binaries without being told.
link_current() { ln -sfn "$out" "$CACHE/controlplane/current"; }

# kube-controller-manager (namespace deletion, garbage collection) is built from the same
# module as kube-apiserver.
KUBE_COMMANDS="kube-apiserver kubectl kube-controller-manager"
have_kube() { for c in $KUBE_COMMANDS; do [ -x "$out/$c" ] || return 1; done; }

if have_kube && [ -x "$out/etcd" ]; then
  link_current
  log "cached: $out"
  echo "$out"
  exit 0
fi

mkdir -p "$out"
start=$(date +%s)
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly"

if ! have_kube; then
  kdir=$(module_dir kubernetes "$(committed_version kubernetes k8s.io/kubernetes)" "$KUBE_VERSION" gen_kubernetes)
  minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w"
  for kv in "gitVersion=$KUBE_VERSION" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" \
            "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
    ldflags="$ldflags -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
  done
  for cmd in $KUBE_COMMANDS; do
    [ -x "$out/$cmd" ] && continue
    log "building $cmd $KUBE_VERSION (minutes on a cold cache)"
    (cd "$kdir" && go build -trimpath -ldflags "$ldflags" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
    mv "$out/$cmd.tmp" "$out/$cmd"
  done
fi

if [ ! -x "$out/etcd" ]; then
  edir=$(module_dir etcd "$(committed_version etcd go.etcd.io/etcd/server/v3)" "$ETCD_VERSION" gen_etcd)
  log "building etcd $ETCD_VERSION"
  (cd "$edir" && go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$out/etcd.tmp" "$out/etcd"
fi

link_current
log "built in $(( $(date +%s) - start ))s: $out"
echo "$out"
