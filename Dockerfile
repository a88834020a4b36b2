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

# Dependencies first, from pyproject.toml alone, so editing the code does not
# download and install them again.
COPY pyproject.toml ./
# xds-protos carries an older copy of the opentelemetry/proto modules and overwrites
# opentelemetry-proto's files with it; reinstalling opentelemetry-proto at the version
# pip chose puts the real ones back (the Makefile's venv target does the same: the
# OTLP trace exporter breaks without them).
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt \
    && pip install --force-reinstall --no-deps \
        "opentelemetry-proto==$(python -c 'from importlib.metadata import version; print(version("opentelemetry-proto"))')"

# The project itself, as a regular (non-editable) install: the final stage gets
# /opt/venv and nothing from /src. pip compiles every module to .pyc here, because
# the running container cannot (read-only root file system).
COPY README.md ./
COPY services ./services
RUN pip install --no-deps . \
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
