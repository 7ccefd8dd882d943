#!/usr/bin/env bash
# Builds the nodedns container image with buildah, offline, from scratch: the release
# binary, and Debian's `ip`, `iptables`/`ip6tables` (nft and legacy) and `nft` with exactly
# the shared libraries and files they load, taken from this machine. No base image, no
# registry, no shell in the image. Tags localhost/nodedns:VERSION (VERSION from the binary).
#
#   deploy/image/build.sh [--binary PATH] [--tag NAME] [--root DIR --runroot DIR]
#
# --binary  use this nodedns binary instead of building target/release/nodedns
#           (cargo build --release, a no-op when it is up to date)
# --tag     image name (default localhost/nodedns:VERSION)
# --root, --runroot
#           buildah's storage (default: the system's), e.g. a scratch store for tests
#
# Reproducible: file times, the image's creation time and history are SOURCE_DATE_EPOCH
# (default 0), owners are 0:0 and modes are fixed, so the same binary and the same Debian
# packages give the same image digest. The packages the tools came from are recorded in the
# image's `nodedns.debian-packages` label.
set -euo pipefail
cd "$(dirname "$0")/../.."

binary=""
tag=""
storage=(--storage-driver vfs)
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --root|--runroot) storage+=("$1" "$2"); shift 2 ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
epoch="${SOURCE_DATE_EPOCH:-0}"

for tool in buildah ldd objcopy dpkg-query; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is required (apt-get install buildah binutils)" >&2; exit 1; }
done

if [ -z "$binary" ]; then
    # A no-op when target/release is up to date; never needs the network once the crates
    # are in cargo's cache (Cargo.lock is respected as is).
    # The commit goes into coredns_build_info{revision} (a changed value rebuilds).
    NODEDNS_REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" cargo build --release --locked --bin nodedns
    binary="${CARGO_TARGET_DIR:-target}/release/nodedns"
fi
version="$("$binary" --version | awk '{print $2}')"
[ -n "$version" ] || { echo "build.sh: $binary --version printed no version" >&2; exit 1; }
tag="${tag:-localhost/nodedns:$version}"

stage="$(mktemp -d)"
ctr=""
cleanup() {
    [ -z "$ctr" ] || buildah "${storage[@]}" rm "$ctr" >/dev/null 2>&1 || true
    rm -rf "$stage"
}
trap cleanup EXIT

multiarch=x86_64-linux-gnu
# Debian's merged /usr: /bin, /sbin, /lib and /lib64 are links into /usr, so the paths
# compiled into the tools and the loader's default search path all resolve.
mkdir -p "$stage"/usr/{bin,sbin,lib64,lib/$multiarch/xtables,libexec/iptables-legacy} "$stage"/etc/ssl/certs "$stage"/{run,tmp,var/lib/nodedns}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$stage/$d"; done

# Debug information stripped: 90 MB of it, and backtraces still have the symbol names.
objcopy --strip-debug "$binary" "$stage/nodedns"
ln -s nodedns "$stage/node-cache"

cp /usr/bin/ip "$stage/usr/bin/ip"
ln -s ../bin/ip "$stage/usr/sbin/ip"
cp /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/nft "$stage/usr/sbin/"
# The multi binaries act on their argv[0]. `iptables` is the nftables backend, the default
# of current distributions and of kube-proxy's own detection on new clusters; the legacy
# backend gets the same names in a directory of its own, chosen by putting it first in
# PATH (docs/OPERATIONS.md), since nodedns runs the tools by name.
for family in iptables ip6tables; do
    for suffix in "" -save -restore; do
        ln -s xtables-nft-multi "$stage/usr/sbin/$family$suffix"
        ln -s xtables-nft-multi "$stage/usr/sbin/$family-nft$suffix"
        ln -s xtables-legacy-multi "$stage/usr/sbin/$family-legacy$suffix"
        ln -s ../../sbin/xtables-legacy-multi "$stage/usr/libexec/iptables-legacy/$family$suffix"
    done
done
# Every extension, not only those of nodedns's rules: listing or checking a chain makes
# iptables decode the other rules of its table (kube-proxy's), with their extensions.
cp /usr/lib/$multiarch/xtables/*.so "$stage/usr/lib/$multiarch/xtables/"

# The shared libraries of everything above, as the loader resolves them here.
elves=("$stage/nodedns" "$stage/usr/bin/ip" "$stage"/usr/sbin/{xtables-nft-multi,xtables-legacy-multi,nft} "$stage"/usr/lib/$multiarch/xtables/*.so)
if ldd "${elves[@]}" | grep 'not found'; then echo "build.sh: a library is missing on this machine" >&2; exit 1; fi
ldd "${elves[@]}" | awk '/=> \// {print $3} /^\t\// {print $1}' | sort -u | while read -r lib; do
    cp -L "$lib" "$stage/usr/${lib#/usr/}"
done

cp /etc/protocols "$stage/etc/protocols"
cp -r /etc/iproute2 "$stage/etc/iproute2"
# DNS-over-TLS upstreams verify against the system's roots (rustls-native-certs).
cp /etc/ssl/certs/ca-certificates.crt "$stage/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n' > "$stage/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$stage/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\nprotocols: files\nservices: files\n' > "$stage/etc/nsswitch.conf"

# Modes independent of this machine's umask.
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod 0644 {} +
chmod 0755 "$stage/nodedns" "$stage"/usr/bin/* "$stage"/usr/sbin/xtables-* "$stage/usr/sbin/nft" "$stage"/usr/lib/$multiarch/*.so* "$stage"/usr/lib64/*
chmod 1777 "$stage/tmp"

packages="$(dpkg-query -W -f='${Package}=${Version} ' libc6 libgcc-s1 iproute2 iptables nftables ca-certificates netbase | sed 's/ $//')"
revision="$(git rev-parse HEAD 2>/dev/null || true)"

ctr="$(buildah "${storage[@]}" from scratch)"
buildah "${storage[@]}" copy --chown 0:0 "$ctr" "$stage/" / >/dev/null
buildah "${storage[@]}" config \
    --os linux --arch amd64 \
    --entrypoint '["/nodedns"]' --cmd '["run"]' \
    --workingdir / \
    --created-by "deploy/image/build.sh (buildah copy of a staged root)" \
    --env PATH=/usr/sbin:/usr/bin \
    --label org.opencontainers.image.title=nodedns \
    --label "org.opencontainers.image.description=A node-local DNS cache for Kubernetes" \
    --label "org.opencontainers.image.version=$version" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --label "org.opencontainers.image.created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)" \
    ${revision:+--label "org.opencontainers.image.revision=$revision"} \
    --label "nodedns.debian-packages=$packages" \
    "$ctr"
buildah "${storage[@]}" commit --quiet --format oci --timestamp "$epoch" --rm "$ctr" "$tag" >/dev/null
ctr=""
echo "$tag $(buildah "${storage[@]}" inspect --format '{{.FromImageDigest}}' "$tag")"
