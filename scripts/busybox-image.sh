#!/usr/bin/env bash
# Builds docker.io/berth/busybox:latest, a one-layer image of Debian's
# busybox-static, as an OCI image layout tar, with no network. Usage:
#   scripts/busybox-image.sh OUT.tar
# `ctr images import OUT.tar` then makes the image available.
set -euo pipefail

out=${1:?usage: busybox-image.sh OUT.tar}
name=docker.io/berth/busybox:latest
busybox=/bin/busybox
[[ -x $busybox ]] || { echo "busybox-image.sh: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root,var,run}
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

# A reproducible layer: sorted names, fixed times and owners.
tar --sort=name --mtime=@1704067200 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/layer.tar" .
diff_id=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 "$work/layer.tar"

layout=$work/layout
mkdir -p "$layout/blobs/sha256"
blob() { # FILE -> prints "digest size", stores the blob
    local digest size
    digest=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    cp "$1" "$layout/blobs/sha256/$digest"
    echo "sha256:$digest $size"
}
read -r layer_digest layer_size < <(blob "$work/layer.tar.gz")

arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
case $arch in
    amd64 | arm64 | ppc64el | s390x | riscv64) ;;
    *) arch=amd64 ;;
esac
[[ $arch == ppc64el ]] && arch=ppc64le
printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["%s"]},"history":[{"created":"2024-01-01T00:00:00Z","created_by":"busybox-image.sh"}]}' \
    "$arch" "$diff_id" >"$work/config.json"
read -r config_digest config_size < <(blob "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
read -r manifest_digest manifest_size < <(blob "$work/manifest.json")

printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"latest"}}]}' \
    "$manifest_digest" "$manifest_size" "$name" >"$layout/index.json"

tar --sort=name --mtime=@1704067200 --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$out" .
echo "$name"
