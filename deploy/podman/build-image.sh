#!/usr/bin/env bash
# Build the ocpp-router image with podman (used by `make image` and tests/deploy).
#
#   deploy/podman/build-image.sh [TAG]          default TAG: localhost/ocpp-router:dev
#
# Environment: BASE_IMAGE / BUILD_IMAGE (default: the local Debian bases of
# base-image.sh), EXTRAS (pyproject extras to install too), CA_BUNDLE (the CA
# bundle pip trusts, passed as a build secret; default: Debian's), PACKAGES
# (more requirements; default: the Dockerfile's, picows for the simulator),
# PIP_INDEX_URL (default: the host's pip index, when it is an http(s) URL).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"
TAG="${1:-localhost/ocpp-router:dev}"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian-python:bookworm}"
BUILD_IMAGE="${BUILD_IMAGE:-localhost/debian-python:bookworm-build}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

# pip inside the build reaches the index the way the host's pip does: same
# index URL (a local file:// index cannot be reached from a build container
# and is left out), same CA bundle.
if [ -z "${PIP_INDEX_URL:-}" ]; then
    PIP_INDEX_URL=$(pip config get global.index-url 2>/dev/null || true)
fi
case "$PIP_INDEX_URL" in
    http://*|https://*) ;;
    *) PIP_INDEX_URL=https://pypi.org/simple ;;
esac

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE=$(git -C "$ROOT" remote get-url origin 2>/dev/null || true)

# PACKAGES only when set (PACKAGES="" too): otherwise the Dockerfile's default.
OPTIONAL=()
if [ -n "${PACKAGES+set}" ]; then
    OPTIONAL+=(--build-arg "PACKAGES=$PACKAGES")
fi

# The image this build replaces, removed afterwards so that repeated builds
# (the tests build on every run) do not pile up untagged images.
OLD=$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)

podman build --quiet --layers \
    --secret "id=ca-certificates,src=$CA_BUNDLE" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "BUILD_IMAGE=$BUILD_IMAGE" \
    --build-arg "EXTRAS=${EXTRAS:-}" \
    "${OPTIONAL[@]}" \
    --build-arg "PIP_INDEX_URL=$PIP_INDEX_URL" \
    --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$REVISION" \
    --build-arg "SOURCE=$SOURCE" \
    --tag "$TAG" \
    --file "$ROOT/Dockerfile" "$ROOT"

NEW=$(podman image inspect --format '{{.Id}}' "$TAG")
if [ -n "$OLD" ] && [ "$OLD" != "$NEW" ]; then
    podman rmi "$OLD" >/dev/null 2>&1 || true   # still used by a container: kept
fi
