#!/usr/bin/env bash
# make demo: a local control plane, bitbucket-sim (with a webhook receiver) and the
# operator; examples/ applied against the simulator, events fired, status shown.
# DEMO_ONESHOT=1 stops everything after printing; otherwise Ctrl-C does.
set -euo pipefail
cd "$(dirname "$0")/.."

bins=$(bash hack/build-controlplane.sh | tail -n1)
export BBWO_CONTROLPLANE_DIR=$bins PATH="$bins:$PATH"
state=${CLUSTER_DIR:-$PWD/.cluster}

echo "==> building the operator, the simulator and the test control plane launcher"
cargo build --quiet --workspace --bins
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$target/testenv" down "$state" >/dev/null 2>&1 || true
  echo "==> stopped and cleaned up"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> starting etcd + kube-apiserver"
"$target/testenv" down "$state" >/dev/null 2>&1 || true
"$target/testenv" up "$state"
export KUBECONFIG=$state/kubeconfig

echo "==> starting bitbucket-sim and a webhook receiver"
"$target/bitbucket-sim" --listen 127.0.0.1:0 --receiver-listen 127.0.0.1:0 >"$state/sim.out" 2>"$state/sim.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '^receiver listening' "$state/sim.out" 2>/dev/null && break; sleep 0.1; done
sim=$(sed -n 's/^bitbucket-sim listening on //p' "$state/sim.out")
receiver=$(sed -n 's/^receiver listening on //p' "$state/sim.out")
[ -n "$sim" ] && [ -n "$receiver" ] || { echo "demo: bitbucket-sim did not start; see $state/sim.log" >&2; exit 1; }
echo "    Bitbucket (simulated) at $sim, deliveries go to $receiver"

control() { curl -fsS -X "$1" -H 'content-type: application/json' "$sim/_sim/$2" ${3:+-d "$3"} >/dev/null; }
# The examples' placeholder credentials are the simulator's tokens, each a repository admin.
# The Cloud example's is an access token holding the webhook scope, the scopes of the
# event families its hooks subscribe to (pullrequest, which implies repository), and the
# repository scope that examples/webhookset.yaml needs to list the workspace's repositories.
control POST tokens '{"token":"replace-with-a-repository-access-token","user":"acme-ci","kind":"projectAccessToken","scopes":["webhook","repository","pullrequest"]}'
control POST tokens '{"token":"replace-with-an-http-access-token","user":"plat-ci"}'
control POST tokens '{"token":"replace-with-a-personal-access-token","user":"ci-bot"}'
control POST tokens '{"token":"shared-token","user":"shared"}'
control POST tokens '{"token":"replace-with-a-project-admin-token","user":"plat-admin"}'
control POST repositories '{"flavor":"Cloud","repository":"acme/api","admins":["replace-with-a-repository-access-token"]}'
control POST repositories '{"flavor":"Cloud","repository":"acme/docs","admins":["shared-token"]}'
control POST repositories '{"flavor":"DataCenter","repository":"PLAT/api","admins":["replace-with-an-http-access-token"]}'
control POST repositories '{"flavor":"DataCenter","repository":"PLAT/tools","admins":["replace-with-an-http-access-token"]}'
# examples/project-hooks.yaml's token administers the PLAT project itself.
control POST repositories '{"flavor":"DataCenter","repository":"PLAT/api","ownerAdmins":["replace-with-a-project-admin-token"]}'
# What examples/webhookset.yaml selects: the CORE project's svc-* repositories.
control POST repositories '{"flavor":"Cloud","repositories":["acme/svc-orders","acme/svc-billing","acme/svc-old-archive"],"project":"CORE","admins":["replace-with-a-repository-access-token"]}'
control POST repositories '{"flavor":"PostWebhooks","repository":"PLAT/web","admins":["replace-with-a-personal-access-token"]}'

echo "==> installing the CRDs"
"$target/bitbucket-webhook-operator" crds | kubectl apply --server-side -f - >/dev/null
kubectl wait --for condition=Established crd --all --timeout=60s >/dev/null
kubectl create namespace demo >/dev/null
kubectl label namespace demo bitbucket.hooks.dev/allowed=true >/dev/null
# ClusterBitbucketConnection credentials live in the operator's namespace (here: demo).
kubectl create secret generic bitbucket-shared-token -n demo --from-literal=token=shared-token >/dev/null

echo "==> starting the operator (log: $state/operator.log)"
"$target/bitbucket-webhook-operator" run --resync-period 30s --health-period 3s --cluster-secret-namespace demo --namespaced-private-targets >"$state/operator.log" 2>&1 &
pids+=($!)

echo "==> applying examples/ to namespace demo, pointed at the simulator"
for f in examples/*.yaml; do
  # Needs Flux's notification-controller, which the demo does not run.
  [ "$f" = examples/flux-receiver.yaml ] && continue
  sed -e "s#https://bitbucket.example.com#$sim#g" \
      -e "/flavor: Cloud/a\\  baseURL: $sim/2.0" \
      -e "/^  flavor: /a\\  allowPrivateTargets: true  # demo only: the receiver is on loopback" \
      -e "s#https://\\(ci\\|chat\\|jenkins\\|preview\\)\\.example\\.com#$receiver/\\1#g" "$f"
  echo "---"
done | kubectl apply -n demo -f -
kubectl wait --for=condition=Ready webhook --all -n demo --timeout=90s
kubectl wait --for=condition=Ready webhookset --all -n demo --timeout=60s

echo "==> firing events through the simulator"
fire() {
  # The answer lists each delivery; show who delivered and what the receiver answered.
  curl -fsS -H 'content-type: application/json' "$sim/_sim/events" -d "{\"repository\":\"$1\",\"event\":\"$2\"}" |
    grep -o '"flavor":"[A-Za-z]*","hookId":"[^"]*","outcome":"[A-Z]*","statusCode":[0-9a-z]*' |
    sed -e 's|"flavor":"\([^"]*\)","hookId":"\([^"]*\)","outcome":"\([^"]*\)","statusCode":\(.*\)|\1 hook \2 -> \4 \3|' \
        -e "s|^|    $1 $2: |"
}
fire acme/api repo:push
fire acme/docs pullrequest:created
fire PLAT/api repo:refs_changed
fire PLAT/web repo:refs_changed

echo "==> waiting for delivery health (Data Center statistics, the Cloud endpoint probe)"
kubectl wait --for=jsonpath='{.status.delivery.health}'=Healthy webhook/chat-notifier webhook/ci-trigger -n demo --timeout=60s

echo "==> kubectl get bitbucket -A"
kubectl get bitbucket -A

if [ "${DEMO_ONESHOT:-}" = 1 ]; then
  exit 0
fi
cat <<MSG

Everything keeps running. In another terminal:
  export KUBECONFIG=$KUBECONFIG
  export PATH=$bins:\$PATH
  kubectl get bbhook -n demo -o wide
  kubectl describe webhook ci-trigger -n demo
  curl -s $sim/_sim/hooks
  curl -s -d '{"repository":"acme/api","event":"repo:push"}' -H 'content-type: application/json' $sim/_sim/events
Ctrl-C stops the operator, the simulator and the control plane and removes their data.
MSG
wait
