# syntax=docker/dockerfile:1.7
# ferryman runtime images, built from the repository root (multi-stage; both run as uid 1000):
#   docker build -f images/runtime.Dockerfile -t ghcr.io/ferryman-dev/ferryman:0.1.0 .
#       native server, gateway (`ferryman serve` / `ferryman up`) and the `ferryman-onnx` KServe runtime (default)
#   docker build -f images/runtime.Dockerfile --target ray -t ghcr.io/ferryman-dev/ferryman-ray:0.1.0 .
#       Ray image for KubeRay RayServices (serveConfigV2 imports ferryman_runtimes.ray.app:build)
# Bases are pinned by exact version; pin by digest too with --build-arg PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/lock.txt requirements/lock.txt
COPY platform platform
COPY runtimes runtimes
COPY operators operators
# Every dependency at the version in the lock file; the package itself as a wheel for the ray stage too.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -c requirements/lock.txt ".[serve,drift]" \
 && /opt/venv/bin/pip wheel --no-deps -w /wheels .

FROM ${RAY_IMAGE} AS ray
COPY --from=build /wheels /wheels
COPY requirements/lock.txt /tmp/lock.txt
RUN pip install --no-cache-dir -c /tmp/lock.txt "$(ls /wheels/ferryman-*.whl)[serve]" \
 && rm -rf /wheels /tmp/lock.txt
ENV FERRYMAN_HEALTHCHECK_URL=http://127.0.0.1:8000/-/healthz
USER 1000:100
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['FERRYMAN_HEALTHCHECK_URL'], timeout=2)"]

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin ferryman
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    FERRYMAN_HEALTHCHECK_URL=http://127.0.0.1:8080/v2/health/ready
USER 1000:1000
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['FERRYMAN_HEALTHCHECK_URL'], timeout=2)"]
# The ClusterServingRuntime runs exactly this (with --model_name set by KServe); Kubernetes `command`
# overrides it for the native server and the gateway (`ferryman serve ...`, `ferryman up ...`).
ENTRYPOINT ["python", "-m", "ferryman_runtimes.kserve"]
CMD ["--model_name", "model", "--model_dir", "/mnt/models", "--http_port", "8080"]
