# syntax=docker/dockerfile:1.7
# The ferryman operator image, built from the repository root (multi-stage, runs as uid 1000):
#   docker build -f images/operator.Dockerfile -t ghcr.io/ferryman-dev/ferryman-operator:0.1.0 .
# Bases are pinned by exact version; pin by digest too with --build-arg PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/lock.txt requirements/lock.txt
COPY platform platform
COPY runtimes runtimes
COPY operators operators
RUN python -m venv /opt/venv && /opt/venv/bin/pip install -c requirements/lock.txt ".[operator]"

FROM ${PYTHON_IMAGE} AS operator
RUN useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin ferryman
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    FERRYMAN_HEALTH_ADDRESS=0.0.0.0:8081 FERRYMAN_HEALTHCHECK_URL=http://127.0.0.1:8081/healthz
USER 1000:1000
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['FERRYMAN_HEALTHCHECK_URL'], timeout=2)"]
ENTRYPOINT ["python", "-m", "ferryman_operator"]
