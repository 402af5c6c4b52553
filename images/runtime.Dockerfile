# syntax=docker/dockerfile:1.7
# ferryman runtime images, built from the repository root (multi-stage; they run as uid 1000 and under any
# other non-root uid, e.g. the 10001 the chart and the operator's pods use, with a read-only root filesystem):
#   docker build -f images/runtime.Dockerfile -t ghcr.io/ferryman-dev/ferryman:0.1.0 .
#       the chart's image (default target): native server and gateway (`ferryman serve` / `ferryman up` /
#       `ferryman gateway`), the `ferryman-onnx` KServe runtime (its default command), the operator
#       (`python -m ferryman_operator`) and the in-cluster Locust load test
#   docker build -f images/runtime.Dockerfile --target ray -t ghcr.io/ferryman-dev/ferryman-ray:0.1.0 .
#       Ray image for KubeRay RayServices (serveConfigV2 imports ferryman_runtimes.ray.app:build); on top
#       of rayproject/ray, or with --build-arg RAY_IMAGE=ray-base on the Python image alone (no Docker Hub)
# Without any registry: `make images` (scripts/images/build.sh) builds all of them with buildah from a
# Debian base made locally (--build-arg PYTHON_IMAGE=...).
# Bases are pinned by exact version; pin by digest too with --build-arg PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu

# The dependency list alone, read from pyproject.toml ([project] dependencies and the extras below): a
# change elsewhere in pyproject.toml (tool settings, entry points) yields the same file, so the expensive
# stage after it stays cached (a COPY is cached by the content of what it copies).
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /src/pyproject.toml
RUN python -c 'import tomllib, sys; p = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
  lines = p["dependencies"] + [d for e in sys.argv[1].split(",") for d in p["optional-dependencies"][e]]; \
  open("/requirements.txt", "w").write("\n".join(lines) + "\n")' serve,drift,operator,loadtest,examples

# Every dependency at the version in the lock file, in a venv of its own stage: rebuilt only when the lock,
# the dependency list or this recipe change. Big test suites of dependencies are left out.
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/lock.txt /tmp/deps/lock.txt
COPY --from=requirements /requirements.txt /tmp/deps/requirements.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -c /tmp/deps/lock.txt -r /tmp/deps/requirements.txt setuptools \
 && site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && for p in numpy pandas pyarrow scipy sklearn statsmodels; do \
      find "$site/$p" -depth -type d -name tests -exec rm -rf {} +; done \
 && rm -rf /tmp/deps

# The package itself as a wheel (for the runtime and ray stages), built offline with the lock's setuptools.
FROM deps AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY platform platform
COPY runtimes runtimes
COPY operators operators
RUN /opt/venv/bin/pip wheel --no-deps --no-build-isolation -w /wheels .

# A Ray base made from the Python image, laid out like rayproject/ray (pip on PATH, user ray = 1000:100):
# `--build-arg RAY_IMAGE=ray-base` builds the ray target where Docker Hub is out of reach.
FROM ${PYTHON_IMAGE} AS ray-base
COPY requirements/lock.txt /tmp/lock.txt
RUN useradd --uid 1000 --gid 100 --create-home --shell /bin/bash ray \
 && python -m venv /opt/ray \
 && /opt/ray/bin/pip install --no-cache-dir --disable-pip-version-check -c /tmp/lock.txt "ray[serve]" \
 && rm /tmp/lock.txt
ENV PATH=/opt/ray/bin:$PATH

FROM ${RAY_IMAGE} AS ray
COPY --from=build /wheels /wheels
COPY requirements/lock.txt /tmp/lock.txt
RUN pip install --no-cache-dir -c /tmp/lock.txt "$(ls /wheels/ferryman-*.whl)[serve]" \
 && rm -rf /wheels /tmp/lock.txt
ENV FERRYMAN_HEALTHCHECK_URL=http://127.0.0.1:8000/-/healthz
USER 1000:100
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['FERRYMAN_HEALTHCHECK_URL'], timeout=2)"]

# On the deps stage itself, not a copy of its venv: a source change then rebuilds only the small layers
# below (copying /opt/venv into a fresh stage re-reads and re-hashes it on every build, about a minute).
FROM deps AS runtime
WORKDIR /
RUN useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin ferryman
COPY --from=build /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --disable-pip-version-check /tmp/wheels/ferryman-*.whl \
 && rm -rf /tmp/wheels
# HOME=/tmp: the only writable place under a read-only root filesystem (an emptyDir in the chart's and
# the operator's pods), whatever uid the pod runs as.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    FERRYMAN_HEALTHCHECK_URL=http://127.0.0.1:8080/v2/health/ready
USER 1000:1000
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['FERRYMAN_HEALTHCHECK_URL'], timeout=2)"]
# The ClusterServingRuntime runs exactly this (with --model_name set by KServe); Kubernetes `command`
# overrides it for the native server and the gateway (`ferryman serve ...`, `ferryman up ...`).
ENTRYPOINT ["python", "-m", "ferryman_runtimes.kserve"]
CMD ["--model_name", "model", "--model_dir", "/mnt/models", "--http_port", "8080"]
