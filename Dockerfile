# syntax=docker/dockerfile:1
#
# relay image: one uvicorn process per container; scale with replicas (see docker-compose.yml),
# not with --workers, so a load balancer sees every process and a crash takes down one replica only.
#
#   docker build -t relay:local .
#   docker run --rm -p 8000:8000 -e RELAY_SECRET=... relay:local     # embedded in-memory mode

ARG NODE_IMAGE=node:22-alpine
ARG PYTHON_IMAGE=python:3.11-slim

# --- web assets ------------------------------------------------------------------------------
# The browser client imports socket.io-client and uqr (the QR encoder) from web/vendor/, which
# is built from the npm lockfile (not committed), as the Makefile's `web` target does.
# package*.json are copied first so that `npm ci` stays cached until the lockfile changes.
FROM ${NODE_IMAGE} AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
# node_modules is removed in the same step so that the runtime stage copies only what is served.
RUN mkdir -p vendor \
 && cp node_modules/socket.io-client/dist/socket.io.esm.min.js vendor/ \
 && cp node_modules/uqr/dist/index.mjs vendor/uqr.mjs \
 && rm -rf node_modules

# --- python package --------------------------------------------------------------------------
# Installed into a virtualenv in a throw-away stage: pip, build backends and caches stay out of
# the runtime image, which only receives /opt/venv.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies from the lock file (exact versions, hashes checked), then the project on top.
COPY requirements/runtime.lock ./requirements/
RUN pip install -r requirements/runtime.lock
# README.md is referenced by pyproject.toml (project.readme), so the build needs it.
COPY pyproject.toml README.md ./
COPY relay/ ./relay/
RUN pip install --no-deps .

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="relay" \
      org.opencontainers.image.description="Relays WhatsApp QR codes and connection state from Evolution API / WPPConnect to browsers"

# A fixed numeric uid/gid so that orchestrators can enforce runAsNonRoot without a lookup.
RUN groupadd --system --gid 10001 relay \
 && useradd --system --uid 10001 --gid relay --home-dir /app --no-create-home \
            --shell /usr/sbin/nologin relay

COPY --from=build /opt/venv /opt/venv
# Owned by root and only readable by the service user: the process cannot rewrite its own code
# or the page it serves.
COPY --from=web /src/web /app/web

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RELAY_WEB_DIR=/app/web

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# /healthz is liveness only (the process answers). It does not depend on Redis or the gateway, so
# a Redis outage does not make Docker mark every replica unhealthy at once; load balancers that
# can take a replica out of rotation should probe /readyz instead (see deploy/README.md).
# python is used because the slim image has neither curl nor wget.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

# Exec form: uvicorn is PID 1 and receives SIGTERM directly, so it closes websockets cleanly
# and browsers reconnect to another replica.
CMD ["relay", "serve", "--host", "0.0.0.0", "--port", "8000"]
