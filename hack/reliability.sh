#!/usr/bin/env bash
# The full reliability run: every suite in tests/it/reliability.rs and the
# tenancy, connect, attack and fencing suites (tests/it/tenancy.rs, connect.rs, attacks.rs, fencing.rs, and
# fencing with the chart's pods on the ground's node, in_pod.rs) with the large N (BYOC_FULL=1), then docs/reliability.md from the figures they record.
set -euo pipefail
source "$(dirname "$0")/env.sh"
hack/build-ground.sh env >/dev/null
figures=$(mktemp)
trap 'rm -f "$figures"' EXIT
export BYOC_FULL=1 BYOC_FIGURES="$figures"
start=$(date +%s)
cargo test --locked --test it -- reliability:: tenancy:: connect:: attacks:: fencing:: in_pod:: --test-threads=2 --nocapture
took=$(( $(date +%s) - start ))
cargo run --locked -q -p testground -- reliability-report --figures "$figures" --out docs/reliability.md \
  --run "Last run: $(date -u +%Y-%m-%d), $(nproc) cores, ${took} s for all suites, commit $(git rev-parse --short HEAD)."
echo "wrote docs/reliability.md"
