# syntax=docker/dockerfile:1.7
# The ferryman operator image alone, built from the repository root (multi-stage; runs as uid 1000 and
# under any other non-root uid, with a read-only root filesystem):
#   docker build -f images/operator.Dockerfile -t ghcr.io/ferryman-dev/ferryman-operator:0.1.0 .
# It carries only the operator's dependencies; the chart runs the operator from its one image
# (images/runtime.Dockerfile, which has them too). Without any registry: `make images`.
# Bases are pinned by exact version; pin by digest too with --build-arg PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# The dependency list alone, read from pyproject.toml ([project] dependencies and the extras below): a
# change elsewhere in pyproject.toml (tool settings, entry points) yields the same file, so the expensive
# stage after it stays cached (a COPY is cached by the content of what it copies).
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /src/pyproject.toml
RUN python -c 'import tomllib, sys; p = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
  lines = p["dependencies"] + [d for e in sys.argv[1].split(",") for d in p["optional-dependencies"][e]]; \
  open("/requirements.txt", "w").write("\n".join(lines) + "\n")' operator

# Every dependency at the version in the lock file, in a venv of its own stage: rebuilt only when the lock,
# the dependency list or this recipe change. Big test suites of dependencies are left out.
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/lock.txt /tmp/deps/lock.txt
COPY --from=requirements /requirements.txt /tmp/deps/requirements.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -c /tmp/deps/lock.txt -r /tmp/deps/requirements.txt setuptools \
 && site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && find "$site/numpy" -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf /tmp/deps

# The package itself as a wheel, built offline with the lock's setuptools.
FROM deps AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY platform platform
COPY runtimes runtimes
COPY operators operators
RUN /opt/venv/bin/pip wheel --no-deps --no-build-isolation -w /wheels .

# On the deps stage itself, not a copy of its venv: a source change then rebuilds only the small layers
# below (copying /opt/venv into a fresh stage re-reads and re-hashes it on every build, about a minute).
FROM deps AS operator
WORKDIR /
RUN useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin ferryman
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
