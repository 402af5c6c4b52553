# syntax=docker/dockerfile:1.7
# The ferryman operator image alone, built from the repository root (multi-stage; runs as uid 1000 and
# under any other non-root uid, with a read-only root filesystem):
#   docker build -f images/operator.Dockerfile -t ghcr.io/ferryman-dev/ferryman-operator:0.1.0 .
# It carries only the operator's dependencies; the chart runs the operator from its one image
# (images/runtime.Dockerfile, which has them too). Without any registry: `make images`.
# Bases are pinned by exact version; pin by digest too with --build-arg PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# Every dependency at the version in the lock file, in a venv of its own stage (empty packages stand in for
# the sources): rebuilt only when the lock, the dependencies in pyproject.toml or this recipe change.
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
COPY requirements/lock.txt requirements/lock.txt
RUN for p in platform/ferryman runtimes/ferryman_runtimes operators/ferryman_operator; do \
      mkdir -p "$p" && touch "$p/__init__.py"; done \
 && touch README.md \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install -c requirements/lock.txt ".[operator]" setuptools \
 && /opt/venv/bin/pip uninstall -y ferryman \
 && site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && find "$site/numpy" -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf /src

# The package itself as a wheel, built offline with the lock's setuptools.
FROM deps AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY platform platform
COPY runtimes runtimes
COPY operators operators
RUN /opt/venv/bin/pip wheel --no-deps --no-build-isolation -w /wheels .

FROM ${PYTHON_IMAGE} AS operator
RUN useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin ferryman
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --disable-pip-version-check /tmp/wheels/ferryman-*.whl \
 && rm -rf /tmp/wheels
# HOME=/tmp: the only writable place under a read-only root filesystem (the chart mounts an emptyDir there).
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    FERRYMAN_HEALTH_ADDRESS=0.0.0.0:8081 FERRYMAN_HEALTHCHECK_URL=http://127.0.0.1:8081/healthz
USER 1000:1000
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['FERRYMAN_HEALTHCHECK_URL'], timeout=2)"]
ENTRYPOINT ["python", "-m", "ferryman_operator"]
