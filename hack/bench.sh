#!/usr/bin/env bash
# The benchmark (figures, not assertions): builds the operator in release,
# starts the test ground, runs P1 (time to running vs the critical path),
# P2 (AWS calls), P3 (many clusters: CPU and memory), P5 (many clusters in
# one account against AWS's rate limits), resync reads by cluster count,
# deletion, and ACK's ec2-controller on the same topology, and writes
# bench/results.json and bench/results.md. Arguments go to the benchmark,
# e.g. hack/bench.sh --runs 5 --clusters 200.
set -euo pipefail
source "$(dirname "$0")/env.sh"
hack/build-ground.sh env >/dev/null
# The peer measured side by side (cached after the first build).
hack/build-ground.sh ack >/dev/null
cargo bench --locked --bench operator -- --out bench "$@"
