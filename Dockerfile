# ocpp-router container image (docs/kubernetes.md).
#
#   podman build -t ocpp-router .                       # official python:3.12 images
#   make image                                          # local Debian bases, no registry
#
# Two stages. `build` compiles the Cython core into a wheel and installs it with
# its dependencies into a virtual environment at /opt/ocpp-router; the runtime
# stage is BASE_IMAGE plus that directory and nothing else (no compiler, no pip,
# no build tree). BUILD_IMAGE must carry the same Python as BASE_IMAGE (same
# path, same minor version), the way python:3.12 pairs with python:3.12-slim:
# the virtual environment points at that interpreter. A BUILD_IMAGE without a
# C compiler or Python headers gets them with apt-get (Debian-based images).
#
# pip reaches its index over TLS with the CA bundle passed as a build secret
# (`--secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt`); the
# secret is mounted for single RUN steps only and never lands in a layer.

ARG BASE_IMAGE=docker.io/library/python:3.12-slim-bookworm
ARG BUILD_IMAGE=docker.io/library/python:3.12-bookworm

# ---------------------------------------------------------------- build stage
FROM ${BUILD_IMAGE} AS build

# Optional extras of pyproject.toml to install beside the router (comma-separated).
ARG EXTRAS=""
# More requirements. picows (1.5 MB) lets `ocpp-router simulate` run from the
# image: the chart's `helm test` pod is a simulated charger. PACKAGES="" leaves it out.
ARG PACKAGES="picows>=1.0"
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \
    PIP_DEFAULT_TIMEOUT=120 PYTHONDONTWRITEBYTECODE=1

# A compiler, the Python headers and zlib's (permessage-deflate links zlib).
RUN if command -v cc >/dev/null && [ -f /usr/include/zlib.h ] && python3 -c \
        'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_path("include") + "/Python.h"))'; \
    then echo "build tools present"; \
    else apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           gcc libc6-dev zlib1g-dev python3-dev >/dev/null \
        && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /src
# The dependencies first, from pyproject.toml alone: a code change does not
# download them again (layer cache).
COPY pyproject.toml ./
RUN python3 -m venv /opt/build \
    && python3 -m venv /opt/ocpp-router \
    && python3 -c 'import os, tomllib; \
p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e for e in os.environ["EXTRAS"].split(",") if e]; \
print("\n".join(p["dependencies"] + [d for e in extras for d in p["optional-dependencies"][e]] \
                 + os.environ["PACKAGES"].split()))' \
       > /tmp/requirements.txt
RUN --mount=type=secret,id=ca-certificates,required=true \
    export PIP_CERT=/run/secrets/ca-certificates \
    && /opt/build/bin/pip install -q --upgrade pip setuptools wheel "cython>=3.0.10" \
    && /opt/ocpp-router/bin/pip install -q -r /tmp/requirements.txt

COPY setup.py README.md LICENSE NOTICE ./
COPY ext ext
COPY router router
# Compile on every core, then wrap the result into a wheel (build_ext is up to
# date by then, so bdist_wheel does not compile again). Then nothing stays that
# the runtime does not run: pip and its kin go, debug symbols go (uvloop's 13 MB
# become 2), and bytecode is compiled now because the root filesystem is
# read-only at run time (unchecked-hash: valid whatever timestamps COPY leaves).
RUN /opt/build/bin/python setup.py -q build_ext -j "$(nproc)" \
    && /opt/build/bin/pip wheel -q --no-build-isolation --no-deps -w /wheels . \
    && /opt/ocpp-router/bin/pip install -q --no-deps /wheels/*.whl \
    && /opt/ocpp-router/bin/python -m pip uninstall -q -y pip setuptools \
    && find /opt/ocpp-router -name '*.so' -exec strip --strip-unneeded {} + \
    && find /opt/ocpp-router -depth -name __pycache__ -exec rm -rf {} + \
    && /opt/ocpp-router/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/ocpp-router/lib \
    && rm -f /opt/ocpp-router/bin/activate* /opt/ocpp-router/bin/Activate.ps1

# -------------------------------------------------------------- runtime stage
FROM ${BASE_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=""
# Where the source lives: the build script passes the git remote (empty without one).
ARG SOURCE=""
LABEL org.opencontainers.image.title="ocpp-router" \
      org.opencontainers.image.description="OCPP-J front tier: charger WebSockets in, Redis Streams out" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /opt/ocpp-router /opt/ocpp-router

ENV PATH=/opt/ocpp-router/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8

# The interpreter of the build stage must be this image's: fail the build, not the pod.
RUN ["/opt/ocpp-router/bin/ocpp-router", "--version"]

# A numeric uid/gid without a passwd entry (nothing here looks one up);
# Kubernetes' runAsNonRoot can verify it only when it is numeric.
USER 10001:10001
EXPOSE 9000 9001
# SIGTERM starts the paced drain (docs/deployment.md); the router is PID 1 and
# installs its own handlers, so no init process sits in between.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/ocpp-router/bin/ocpp-router"]
CMD ["serve"]
