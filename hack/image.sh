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

mkdir -p "$work/layout/blobs/sha256"
blob() { # file -> digest (hex); moves it into the layout
  local d; d=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$work/layout/blobs/sha256/$d"; echo "$d"
}
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$root" -cf "$work/layer.tar" .
# The ownership the image needs is kept where it is not root's.
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -1 "$work/layer.tar"
layer_size=$(stat -c %s "$work/layer.tar.gz")
layer=$(blob "$work/layer.tar.gz")

cat > "$work/config.json" <<EOF
{"architecture":"amd64","os":"linux","config":{"User":"$user","Entrypoint":$entrypoint,"Cmd":$cmd,"ExposedPorts":{"$port":{}},"Env":["PATH=/usr/local/bin:/usr/bin:/bin","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]}}
EOF
config_size=$(stat -c %s "$work/config.json")
config=$(blob "$work/config.json")

cat > "$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer","size":$layer_size}]}
EOF
manifest_size=$(stat -c %s "$work/manifest.json")
manifest=$(blob "$work/manifest.json")

echo '{"imageLayoutVersion":"1.0.0"}' > "$work/layout/oci-layout"
cat > "$work/layout/index.json" <<EOF
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest","size":$manifest_size,"annotations":{"org.opencontainers.image.ref.name":"byoc.dev/byoc-operator:local"}}]}
EOF
mkdir -p "$out"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/layout" -cf "$out/image.tar.tmp" .
mv "$out/image.tar.tmp" "$out/image.tar"
cp "$work/layout/blobs/sha256/$config" "$out/config.json"
echo "sha256:$manifest" > "$out/digest"
echo "sha256:$manifest"
