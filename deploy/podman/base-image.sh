#!/usr/bin/env bash
# Build the local base images the Dockerfile uses when no registry is reachable:
#
#   localhost/debian-python:bookworm        runtime: Debian's Essential set + python3
#   localhost/debian-python:bookworm-build  build:   the same + gcc, python3-dev, zlib1g-dev
#
# Both come from Debian packages (mmdebstrap) and are imported with `podman import`.
# The two share one python3 (/usr/bin/python3, same release), so the virtual
# environment built in the build image runs unchanged in the runtime image,
# as python:3.12 and python:3.12-slim pair up on Docker Hub.
#
# Cached: an image that exists already is not rebuilt (`FORCE=1` rebuilds).
#
# Size: the Essential variant (no apt: nothing installs packages at run time),
# merged /usr without the usrmerge package (it pulls in perl), and no man
# pages, info, translations or docs other than the copyright files.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"
SUITE="${SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
RUNTIME_TAG="${BASE_IMAGE:-localhost/debian-python:$SUITE}"
BUILD_TAG="${BUILD_IMAGE:-localhost/debian-python:$SUITE-build}"

RUNTIME_PACKAGES=python3,python3-venv,ca-certificates
BUILD_PACKAGES=$RUNTIME_PACKAGES,python3-dev,gcc,libc6-dev,zlib1g-dev

SLIM=(
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
)

build() {   # build TAG PACKAGES
    local tag=$1 packages=$2
    if [ "${FORCE:-0}" != 1 ] && podman image exists "$tag"; then
        echo "base-image: $tag exists (FORCE=1 rebuilds it)"
        return
    fi
    local dir
    dir=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$dir'" RETURN
    echo "base-image: building $tag from Debian $SUITE ($packages)"
    mmdebstrap --quiet --variant=essential --include="$packages" \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr "${SLIM[@]}" \
        "$SUITE" "$dir/rootfs.tar" "$MIRROR" >/dev/null   # the hook echoes apt's output
    podman import --quiet \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/usr/bin/python3"]' \
        --message "mmdebstrap --variant=essential $SUITE ($packages)" \
        "$dir/rootfs.tar" "$tag" >/dev/null
    echo "base-image: $tag built"
}

build "$RUNTIME_TAG" "$RUNTIME_PACKAGES"
build "$BUILD_TAG" "$BUILD_PACKAGES"
