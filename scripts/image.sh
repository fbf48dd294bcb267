#!/usr/bin/env bash
# An OCI image of `threshold`, built offline with Debian's buildah: FROM
# scratch, holding the binary (stripped), the shared libraries it links
# (from this machine's Debian, found by ldd), the CA roots for partners'
# HTTPS webhooks, and a non-root user. No registry is reached.
#
#   scripts/image.sh [--binary PATH] [--tag NAME]
#
#   --binary  the threshold binary to ship; default: build it
#             (cargo build --release -p threshold) and take target/release
#   --tag     the image's name; default localhost/threshold:VERSION, also
#             tagged localhost/threshold:latest
#
# The image runs `threshold serve` on 0.0.0.0:50051 (gRPC) and
# 0.0.0.0:9464 (/metrics) with its data in the volume /data, as user
# threshold (uid 10001). Its health check is `threshold health` (gRPC
# health on 127.0.0.1:50051, or THRESHOLD_SERVER).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BINARY=
TAG=
while [ $# -gt 0 ]; do
    case $1 in
        --binary) BINARY=$2; shift 2 ;;
        --tag) TAG=$2; shift 2 ;;
        *) echo "image: unknown argument $1 (see the top of $0)" >&2; exit 2 ;;
    esac
done

for tool in buildah ldd; do
    if ! command -v "$tool" >/dev/null; then
        echo "image: $tool is needed (Debian: apt-get install buildah podman)" >&2
        exit 1
    fi
done

if [ -z "$BINARY" ]; then
    (cd "$ROOT" && cargo build --release -q -p threshold)
    BINARY=$ROOT/target/release/threshold
fi
if [ ! -x "$BINARY" ]; then
    echo "image: $BINARY is not an executable" >&2
    exit 1
fi
VERSION=$("$BINARY" --version | awk '{print $2}')
if [ -z "$TAG" ]; then
    TAG=localhost/threshold:$VERSION
    ALSO=localhost/threshold:latest
else
    ALSO=
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
ROOTFS=$STAGE/rootfs
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc/ssl/certs" "$ROOTFS/tmp" "$STAGE/data"
chmod 1777 "$ROOTFS/tmp"

if command -v strip >/dev/null; then
    strip -o "$ROOTFS/usr/local/bin/threshold" "$BINARY"
else
    cp "$BINARY" "$ROOTFS/usr/local/bin/threshold"
fi

# The libraries the binary links, and the dynamic loader, at their paths.
libs=$(ldd "$BINARY" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
for lib in $libs; do
    mkdir -p "$ROOTFS$(dirname "$lib")"
    cp -L "$lib" "$ROOTFS$lib"
done
# Debian's /lib is a link to /usr/lib: the loader's path must resolve.
if [ -L /lib64 ] || [ -L /lib ]; then
    for link in /lib /lib64; do
        if [ -L "$link" ] && [ -d "$ROOTFS$link" ]; then
            target=$(readlink "$link")
            mkdir -p "$ROOTFS/$target"
            cp -a "$ROOTFS$link/." "$ROOTFS/$target/"
            rm -rf "${ROOTFS:?}$link"
            ln -s "$target" "$ROOTFS$link"
        fi
    done
fi

# Partners' webhook endpoints are HTTPS: the system's roots (Debian's
# ca-certificates), read by rustls-native-certs.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/"
else
    echo "image: no /etc/ssl/certs/ca-certificates.crt here; HTTPS webhooks from the image will find no roots" >&2
fi

cat >"$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
threshold:x:10001:10001:threshold:/data:/sbin/nologin
EOF
cat >"$ROOTFS/etc/group" <<'EOF'
root:x:0:
threshold:x:10001:
EOF
cat >"$ROOTFS/etc/nsswitch.conf" <<'EOF'
hosts: files dns
EOF

cat >"$STAGE/Containerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /data/
USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE 50051 9464
ENV THRESHOLD_SERVER=http://127.0.0.1:50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \\
    CMD ["/usr/local/bin/threshold", "health", "--timeout", "4"]
LABEL org.opencontainers.image.title="threshold" \\
      org.opencontainers.image.version="$VERSION" \\
      org.opencontainers.image.description="Threshold: in-home and last-mile delivery for DK, FI, NO and SE"
ENTRYPOINT ["/usr/local/bin/threshold"]
CMD ["serve", "--data", "/data", "--listen", "0.0.0.0:50051", "--admin", "0.0.0.0:9464", "--insecure"]
EOF

# Docker format: the OCI format has no health check.
buildah bud --quiet --format docker --layers=false --tag "$TAG" "$STAGE" >/dev/null
if [ -n "$ALSO" ]; then
    buildah tag "$TAG" "$ALSO"
fi
size=$(buildah inspect --type image --format '{{.Size}}' "$TAG" 2>/dev/null || true)
echo "image: $TAG${ALSO:+ (and $ALSO)}${size:+, $((size / 1024 / 1024)) MiB}"
