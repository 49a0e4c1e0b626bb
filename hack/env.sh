# Sourced by the hack scripts: the repository as working directory, the
# cache of heavy builds outside it, and the shared cargo target there.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export BYOC_CACHE="${BYOC_CACHE:-$HOME/.cache/byoc-operator}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BYOC_CACHE/target}"
