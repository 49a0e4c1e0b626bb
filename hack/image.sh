#!/usr/bin/env bash
# The operator's runtime image, assembled without a registry: the same
# image the Dockerfile's last stage describes (distroless cc, nonroot) —
# glibc, libgcc, CA certificates, uid/gid 65532, the binary at
# /usr/local/bin/byoc-operator, no shell — as an OCI image layout tarball
# that containerd imports (`ctr images import`). Reproducible: the same
# binary gives the same digest.
#
#   hack/image.sh [BINARY] [OUT]   (default: the release build; $BYOC_CACHE/image)
#
# Prints the image's manifest digest (sha256:...) on stdout.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/lib/oci.sh"

binary="${1:-$CARGO_TARGET_DIR/release/byoc-operator}"
out="${2:-$BYOC_CACHE/image}"
[ -x "$binary" ] || { echo "image: no binary at $binary (cargo build --release)" >&2; exit 1; }

# What the Dockerfile's final stage says; tests/it/image.rs checks they agree.
user="65532:65532"
entrypoint='["/usr/local/bin/byoc-operator"]'
cmd='["run"]'
port="8080/tcp"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
chmod 1777 "$root/tmp"
install -m 0755 "$binary" "$root/usr/local/bin/byoc-operator"
# The shared libraries the binary loads, from this machine's glibc (as
# distroless/cc carries Debian's).
ldd "$binary" | awk '/=>/ {print $3} /ld-linux/ {print $1}' | while read -r lib; do
  [ -f "$lib" ] || continue
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
chown 65532:65532 "$root/home/nonroot"

config="{\"User\":\"$user\",\"Entrypoint\":$entrypoint,\"Cmd\":$cmd,\"ExposedPorts\":{\"$port\":{}},\"Env\":[\"PATH=/usr/local/bin:/usr/bin:/bin\",\"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\"],\"WorkingDir\":\"/\"}"
oci_layout "$root" "$config" byoc.dev/byoc-operator:local "$out" "$work"
