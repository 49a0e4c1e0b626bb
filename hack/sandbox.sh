#!/usr/bin/env bash
# The local sandbox: a real kube-apiserver + etcd (with kube-controller-manager,
# so namespace deletion is real) and moto on loopback, the
# CRDs, and the operator; applies examples/ and follows the ComputeCluster to
# `running`. Everything stops on Ctrl-C.
#
#   hack/sandbox.sh               the operator as a process (the quick path)
#   hack/sandbox.sh --in-cluster  as users run it: its image built here and
#                                 loaded into the ground's node, installed by
#                                 `helm install` of charts/byoc-operator
set -euo pipefail
in_cluster=false
case "${1:-}" in
  --in-cluster) in_cluster=true ;;
  "") ;;
  *) echo "usage: $0 [--in-cluster]" >&2; exit 2 ;;
esac
source "$(dirname "$0")/env.sh"
run_dir="$(mktemp -d "${TMPDIR:-/tmp}/byoc-sandbox-XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "sandbox stopped; logs were in $run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> building the test ground (cached) and the operator"
eval "$(hack/build-ground.sh env)"
cargo build --quiet --workspace --bins

up=(up --env-file "$run_dir/env")
if $in_cluster; then
  echo "==> building the operator's image (hack/image.sh, no registry)"
  digest=$(hack/image.sh "$CARGO_TARGET_DIR/debug/byoc-operator" "$run_dir/image")
  up+=(--node --image "$run_dir/image/image.tar")
  echo "==> starting kube-apiserver + etcd, a node (kubelet, containerd) and moto"
else
  echo "==> starting kube-apiserver + etcd and moto"
fi
"$CARGO_TARGET_DIR/debug/testground" "${up[@]}" >"$run_dir/ground.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do [ -f "$run_dir/env" ] && break; kill -0 "${pids[0]}" 2>/dev/null || { cat "$run_dir/ground.log"; exit 1; }; sleep 0.2; done
[ -f "$run_dir/env" ] || { echo "the ground did not come up; see $run_dir/ground.log" >&2; exit 1; }
# shellcheck disable=SC1091
source "$run_dir/env"
cat "$run_dir/env"

if $in_cluster; then
  echo "==> helm install of charts/byoc-operator (CRDs included), the image by digest $digest"
  "$BYOC_HELM" install byoc-operator charts/byoc-operator --namespace byoc-system --create-namespace \
    --set image.repository=byoc.dev/byoc-operator --set image.digest="$digest" --set image.pullPolicy=Never \
    --set aws.endpointUrl="$BYOC_NODE_AWS_ENDPOINT_URL" \
    --set extraEnv[0].name=AWS_EC2_METADATA_DISABLED --set-string extraEnv[0].value=true \
    --set resyncInterval=30s --set progressPoll=2s --wait --timeout 5m
  kubectl get pods -n byoc-system -o wide
  echo "leader: $(kubectl get lease byoc-operator -n byoc-system -o jsonpath='{.spec.holderIdentity}')"
else
  echo "==> installing the CRDs"
  kubectl apply --server-side -f crds/
  kubectl wait --for condition=established --timeout=60s -f crds/

  echo "==> starting the operator (log: $run_dir/operator.log)"
  metrics_addr="${BYOC_SANDBOX_METRICS:-127.0.0.1:8080}"
  "$CARGO_TARGET_DIR/debug/byoc-operator" run --resync-interval 30s --progress-poll 2s --metrics-addr "$metrics_addr" >"$run_dir/operator.log" 2>&1 &
  pids+=($!)
fi

echo "==> applying examples/sandbox/ in namespace byoc-demo"
kubectl create namespace byoc-demo
kubectl apply -n byoc-demo -f examples/sandbox/

echo "==> following the ComputeCluster until it is running (Ctrl-C stops the sandbox)"
kubectl get cc -n byoc-demo -w &
pids+=($!)
kubectl wait cc/demo -n byoc-demo --for=jsonpath='{.status.phase}'=running --timeout=15m
kill "${pids[-1]}" 2>/dev/null || true
kubectl get cloudaccounts,computeclusters -n byoc-demo
if $in_cluster; then
  echo "The operator runs in pods on the node (kubectl get pods -n byoc-system). This node does not serve"
  echo "kubectl logs; the pods' logs are under the node's pod-logs/ ($(grep -o '/[^ ]*byoc-ground-node[^ ]*' "$run_dir/ground.log" | head -1))."
else
  echo "AWS calls made so far (from $metrics_addr/metrics):"
  curl -s "http://$metrics_addr/metrics" | grep '^byoc_aws_calls_total' | sed 's/^/  /' || true
fi
cat <<MSG

The cluster is running in moto ($AWS_ENDPOINT_URL). In another shell:
  source $run_dir/env
  kubectl get cc -n byoc-demo demo -o yaml       # status: IDs of every resource
  kubectl delete -n byoc-demo -f examples/sandbox/  # removes everything it created, in AWS too
  # (or: kubectl delete namespace byoc-demo; the account and its Secret wait for the cluster)
Ctrl-C here stops the operator, the apiserver and moto.
MSG
wait "${pids[0]}"
