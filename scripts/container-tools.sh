#!/usr/bin/env bash
# podman, buildah and runc from Debian's packages, for `make image` and the
# image test, installed when missing and this is root on Debian. Never
# fails: where they cannot be installed, the image test says so and skips.
set -uo pipefail

missing=()
for tool in podman buildah runc; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "container-tools: ${missing[*]} missing and not installable here (needs root and apt-get); the image test will skip" >&2
    exit 0
fi
echo "container-tools: installing ${missing[*]} from Debian's packages (once)" >&2
export DEBIAN_FRONTEND=noninteractive
install() {
    timeout 600 apt-get install -y -q podman buildah runc >/dev/null
}
if ! install; then
    timeout 300 apt-get update -q >/dev/null && install
fi || echo "container-tools: apt-get could not install podman buildah runc; the image test will skip" >&2
exit 0
