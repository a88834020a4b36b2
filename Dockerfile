# grpc-shop: one image for all three services; the command chooses which one runs.
#
#   docker build -t grpc-shop .
#   docker run --rm -p 50051:50051 grpc-shop serve orders
#   docker run --rm grpc-shop env          # every setting the services read
#
# On SIGTERM a service fails its health check, waits SHOP_DRAIN_DELAY_S (5 s), then
# gives calls in flight SHOP_SHUTDOWN_GRACE_S (10 s): give `docker stop -t` (or
# compose's stop_grace_period, Kubernetes' terminationGracePeriodSeconds) more than
# their sum, or the runtime kills the process mid-drain.

# Both stages use the same image: the virtualenv made in the first one points at
# the interpreter in /usr/local/bin, which must be the very same one in the second.
# Pinned by tag; pass a digest here (--build-arg) for byte-for-byte rebuilds.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: the project and its dependencies in /opt/venv ----------------------------
FROM ${PYTHON_IMAGE} AS builder

# hdrhistogram has no wheel for arm64, so pip compiles it there. The compiler stays
# in this stage; Debian's security updates make version pins here stale within weeks.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# What the image runs: the three services, the runtime kit and API contract they are
# built on, and the shop command with its load generator (the chart's loadgen
# Deployment runs it). Not the lab: its dependencies (dnslib, xds-protos) stay out.
ARG DISTRIBUTIONS="services/runtime services/api services/gateway services/orders services/inventory tools/cli"

# Dependencies first, from the distributions' pyproject.toml files and the lock alone,
# so editing the code does not download and install them again. Each version is the
# one requirements.lock pins (the same lock `make venv` installs through).
COPY requirements.lock ./
COPY services/runtime/pyproject.toml services/runtime/
COPY services/api/pyproject.toml services/api/
COPY services/gateway/pyproject.toml services/gateway/
COPY services/orders/pyproject.toml services/orders/
COPY services/inventory/pyproject.toml services/inventory/
COPY tools/cli/pyproject.toml tools/cli/
# Each builds as an empty distribution here (setuptools wants its src/ folder to exist);
# pip installs their dependencies. Versions are pinned by the constraint file (DL3013);
# $DISTRIBUTIONS is a list (SC2086).
# hadolint ignore=DL3013,SC2086
RUN for folder in $DISTRIBUTIONS; do mkdir -p "$folder/src"; done \
    && pip install --constraint requirements.lock $DISTRIBUTIONS

# Then the code, as regular (non-editable) installs over those empty first builds: the
# final stage gets /opt/venv and nothing from /src. pip compiles every module to .pyc
# here, because the running container cannot (read-only root file system).
COPY services ./services
COPY tools/cli ./tools/cli
# hadolint ignore=DL3013,SC2086
RUN pip install --no-deps --force-reinstall $DISTRIBUTIONS \
    && pip check

# --- final: the virtualenv on a clean base, no compilers, not root ---------------------
FROM ${PYTHON_IMAGE}

# An ARG from before FROM is only in scope in a stage that declares it again.
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="grpc-shop" \
      org.opencontainers.image.description="gRPC load balancing on Kubernetes, measured: gateway, orders and inventory services (grpc.aio)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER,
# and volumes can be prepared for a known owner (fsGroup, chown).
RUN groupadd --gid 10001 shop \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin shop

# Owned by root and read-only to the service: the code cannot be changed at run time.
COPY --from=builder /opt/venv /opt/venv

# No .pyc writes (they were compiled at build time, and the root FS is read-only
# under the chart); logs leave at once, not when a buffer fills. SQLite files go to
# /tmp, the one writable path (the chart mounts an emptyDir there; with
# `docker run --read-only` add `--tmpfs /tmp`). DATABASE_URL points elsewhere.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SHOP_DATA_DIR=/tmp/shop

# The mount point of the compose stack's credentials volume: Docker copies this
# directory's owner into a new named volume, so `shop keys` (as uid 10001) can write
# there and only the service user can read the keys.
RUN mkdir -m 0700 /credentials && chown 10001:10001 /credentials

USER 10001:10001

# gRPC (SHOP_LISTEN_ADDR) and Prometheus /metrics (SHOP_METRICS_ADDR), their defaults.
EXPOSE 50051 9464

# The gRPC health protocol against this container's own server (SHOP_LISTEN_ADDR on
# loopback): unhealthy while starting, draining or stopped.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["shop", "health"]

# Python is PID 1 and handles SIGTERM itself (health NOT_SERVING, drain, stop);
# a service starts no child processes, so there is nothing for an init to reap.
ENTRYPOINT ["shop"]
CMD ["serve", "gateway"]
