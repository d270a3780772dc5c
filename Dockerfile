# syntax=docker/dockerfile:1
# authsvc image: a builder stage makes the wheel and a virtualenv from it (dependencies pinned by
# constraints.txt, binary wheels only, so no compiler is needed); the runtime stage gets only
# that virtualenv, runs as an unprivileged user with a fixed UID, and keeps its state under
# /var/lib/authsvc.
#
# scripts/check-deploy (run by .ci/run) executes the builder's RUN lines, the CMD and the
# HEALTHCHECK of this file on the host, with the paths below pointed at a temporary directory,
# so keep every path in the builder's RUN lines behind these variables.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV BUILD_VENV=/opt/build \
    VENV=/opt/authsvc \
    WHEELS=/wheels \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt alembic.ini ./
COPY alembic ./alembic
COPY src ./src
# The build backend lives in its own throwaway venv, pinned, so the wheel is reproducible;
# the service's venv receives the wheel plus exactly the tested dependency versions.
RUN python -m venv "$BUILD_VENV" \
    && "$BUILD_VENV/bin/pip" install --only-binary=:all: -c constraints.txt hatchling==1.33.0 \
    && "$BUILD_VENV/bin/pip" wheel --no-deps --no-build-isolation --wheel-dir "$WHEELS" . \
    && python -m venv "$VENV" \
    && "$VENV/bin/pip" install --only-binary=:all: -c constraints.txt "$WHEELS"/authsvc-*.whl \
    && "$VENV/bin/pip" check

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/authsvc/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTHSVC_DATA_DIR=/var/lib/authsvc \
    AUTHSVC_DATABASE_URL=sqlite+aiosqlite:////var/lib/authsvc/authsvc.db
RUN groupadd --system --gid 10001 authsvc \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/authsvc \
       --no-create-home --shell /usr/sbin/nologin authsvc \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/authsvc
# Same path as in the builder: a venv's scripts name their interpreter by absolute path.
COPY --from=builder /opt/authsvc /opt/authsvc
USER 10001:10001
WORKDIR /var/lib/authsvc
# Data dir: the SQLite database and the development signing key when no
# AUTHSVC_JWT_PRIVATE_KEY_FILE is given (production mounts the key read-only, see
# docker-compose.yml).
VOLUME ["/var/lib/authsvc"]
EXPOSE 8000
# uvicorn finishes in-flight requests on SIGTERM (up to 20 s), then exits 0.
STOPSIGNAL SIGTERM
# No curl in a slim image: the interpreter the service runs on does the probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3).status == 200 else 1)"]
CMD ["authsvc", "serve", "--host", "0.0.0.0", "--port", "8000"]
