#!/usr/bin/env bash
# Install the Debian packages the tests and targets need, only when missing.
#
#   redis-server, redis-tools, redis-sentinel  Redis 7 (TLS, Sentinel, Cluster; redis-cli)
#   haproxy                                    the real load balancer of the fleet tests
#   podman buildah mmdebstrap runc             the container image and `podman kube play`
#   uidmap slirp4netns fuse-overlayfs          what podman needs beside it
#   clang libfuzzer-14-dev libclang-rt-14-dev  the coverage-guided fuzzing build
#
# Idempotent and quiet when everything is there; CI (root, fresh machine) installs.
set -euo pipefail

PACKAGES=(redis-server redis-tools redis-sentinel haproxy
          podman buildah mmdebstrap runc uidmap slirp4netns fuse-overlayfs
          clang libfuzzer-14-dev libclang-rt-14-dev)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "system-deps: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
