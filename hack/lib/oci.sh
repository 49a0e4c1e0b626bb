# oci_layout ROOT CONFIG REF OUT WORK: writes the directory ROOT as a
# one-layer OCI image layout tarball, OUT/image.tar, that containerd imports
# (`ctr images import`), named REF; CONFIG is the image config's "config"
# object (JSON). Reproducible: the same files give the same digest. Also
# writes OUT/config.json and OUT/digest, and prints the manifest's digest
# (sha256:...). WORK is scratch space the caller removes.
oci_layout() {
  local root="$1" image_config="$2" ref="$3" out="$4" work="$5"
  local blobs="$work/layout/blobs/sha256"
  mkdir -p "$blobs"
  _oci_blob() { # file -> digest (hex); moves it into the layout
    local d; d=$(sha256sum "$1" | cut -d' ' -f1)
    mv "$1" "$blobs/$d"; echo "$d"
  }
  # The ownership the image needs is kept where it is not root's.
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$root" -cf "$work/layer.tar" .
  local diff_id layer_size layer config_size config manifest_size manifest
  diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  gzip -n -1 "$work/layer.tar"
  layer_size=$(stat -c %s "$work/layer.tar.gz")
  layer=$(_oci_blob "$work/layer.tar.gz")

  printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}\n' \
    "$image_config" "$diff_id" > "$work/config.json"
  config_size=$(stat -c %s "$work/config.json")
  config=$(_oci_blob "$work/config.json")

  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}\n' \
    "$config" "$config_size" "$layer" "$layer_size" > "$work/manifest.json"
  manifest_size=$(stat -c %s "$work/manifest.json")
  manifest=$(_oci_blob "$work/manifest.json")

  echo '{"imageLayoutVersion":"1.0.0"}' > "$work/layout/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}\n' \
    "$manifest" "$manifest_size" "$ref" > "$work/layout/index.json"
  mkdir -p "$out"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/layout" -cf "$out/image.tar.tmp" .
  mv "$out/image.tar.tmp" "$out/image.tar"
  cp "$blobs/$config" "$out/config.json"
  echo "sha256:$manifest" > "$out/digest"
  echo "sha256:$manifest"
}
