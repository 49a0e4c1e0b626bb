#!/usr/bin/env bash
# All tests, from a fresh clone: builds (or reuses) the test ground under
# $HOME/.cache/byoc-operator, then fmt, clippy, unit and integration tests
# against a real kube-apiserver + etcd and moto. Fails when any part fails,
# and when a process started by the tests outlives them.
set -euo pipefail
source "$(dirname "$0")/env.sh"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
start=$(date +%s)

step() { echo "==> $* ($(( $(date +%s) - start ))s)"; }

step "test ground (kube-apiserver, etcd, kubelet, containerd, moto, helm; cached)"
hack/build-ground.sh env >/dev/null

step "rustfmt"
cargo fmt --all -- --check
step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "module cycles"
python3 hack/module-cycles.py

# Every process the ground starts is recorded here and checked afterwards.
export BYOC_PID_LOG="$BYOC_CACHE/test-pids.$$"
: >"$BYOC_PID_LOG"
trap 'rm -f "$BYOC_PID_LOG"' EXIT

step "tests"
cargo test --workspace --locked -- "$@"

step "stray processes"
# Children die by SIGKILL (PR_SET_PDEATHSIG) when a test process exits; the
# kernel needs a moment to tear a large process down, so wait on a deadline.
alive() { local n=0; while read -r pid _; do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && n=$((n + 1)); done <"$BYOC_PID_LOG"; echo "$n"; }
deadline=$(( $(date +%s) + 30 ))
while [ "$(alive)" != 0 ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
if [ "$(alive)" != 0 ]; then
  while read -r pid name; do kill -0 "$pid" 2>/dev/null && echo "stray process left by the tests: $pid $name" >&2; done <"$BYOC_PID_LOG"
  exit 1
fi
echo "no process started by the tests survives ($(wc -l <"$BYOC_PID_LOG") started)"
# What a node of the ground leaves only when its teardown fails: the
# containers' shims (daemons of its containerd), its network namespace, and
# mounts under its directory.
step "node leftovers"
left=$(pgrep -af 'containerd-shim.*byoc-ground-' || true)
left+=$(ip netns list 2>/dev/null | grep '^byoc-ground-' || true)
left+=$(grep -o ' /[^ ]*byoc-ground-[^ ]*' /proc/self/mountinfo || true)
if [ -n "$left" ]; then
  echo "left by a node of the ground:" >&2; echo "$left" >&2
  exit 1
fi
step "all tests passed"
