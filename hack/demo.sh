#!/usr/bin/env bash
# make demo: a local control plane with the CRDs and examples/ installed, then
# `kubectl get bitbucket -A`. The reconciler does not exist yet, so READY stays empty.
# DEMO_ONESHOT=1 stops everything before exiting.
set -euo pipefail
cd "$(dirname "$0")/.."

bins=$(bash hack/build-controlplane.sh | tail -n1)
export BBWO_CONTROLPLANE_DIR=$bins PATH="$bins:$PATH"
cluster_dir=${CLUSTER_DIR:-$PWD/.cluster}

echo "==> building"
cargo build --quiet -p testenv -p bitbucket-webhook-operator
testenv() { cargo run --quiet -p testenv -- "$@"; }
operator() { cargo run --quiet -p bitbucket-webhook-operator -- "$@"; }

echo "==> starting etcd + kube-apiserver"
testenv down "$cluster_dir" >/dev/null 2>&1 || true
testenv up "$cluster_dir"
export KUBECONFIG=$cluster_dir/kubeconfig
if [ "${DEMO_ONESHOT:-}" = 1 ]; then
  trap 'testenv down "$cluster_dir"' EXIT
fi

echo "==> installing the CRDs"
operator crds | kubectl apply --server-side -f -
kubectl wait --for condition=Established crd --all --timeout=60s

echo "==> applying examples/ in namespace demo"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n demo -f examples/

echo "==> kubectl get bitbucket -A"
kubectl get bitbucket -A

if [ "${DEMO_ONESHOT:-}" != 1 ]; then
  cat <<MSG

The control plane keeps running. Try it:
  export KUBECONFIG=$KUBECONFIG
  export PATH=$bins:\$PATH
  kubectl explain webhook.spec
  kubectl get bbhook -n demo -o wide
Stop it with: make cluster-down
MSG
fi
