"""A Prometheus pod on the real node that scrapes what the chart's PodMonitor selects.

Why not the Prometheus Operator: see docs/cluster.md, "End-to-end tests". Debian's prometheus has no
Kubernetes service discovery, so a sidecar (:mod:`tests.e2e.podmonitor_sd`) reads the PodMonitors that
carry ``release: <monitoring.release>`` (the Prometheus Operator's ``podMonitorSelector``) and the pods, and
writes the targets each PodMonitor selects, with the labels the Prometheus Operator's relabelling gives.

* :func:`prometheus_image` — a scratch-style image holding Debian's ``/usr/bin/prometheus`` and the two
  libc files it links, built with buildah and imported into the node's containerd (cached by content).
* :func:`manifests` — ServiceAccount, ClusterRole(Binding) for pod and PodMonitor discovery, ConfigMap,
  Deployment (Prometheus + the ``podmonitor_sd.py`` sidecar writing its ``file_sd`` targets), Service.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.controlplane import ControlPlane

PROMETHEUS_BINARY = Path("/usr/bin/prometheus")
IMAGE_NAME = "localhost/ferryman-e2e-prometheus"
NAMESPACE = "ferryman-e2e-monitoring"
NAME = "prometheus"
PORT = 9090
UID = 65534
# the libraries Debian's prometheus links (it is a cgo build: ldd lists libc and the loader only)
_LIBS = ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2")


def url() -> str:
    """The in-cluster URL the operator queries (the chart's prometheus.url)."""
    return f"http://{NAME}.{NAMESPACE}.svc:{PORT}"


def _run(*cmd: str, timeout: float = 300) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def _buildah(*args: str) -> list[str]:
    """buildah on the store scripts/images/*.sh use (~/.cache/ferryman/buildah), never the system's."""
    cache = Path(os.environ.get("FERRYMAN_CACHE", Path.home() / ".cache" / "ferryman"))
    return [
        "buildah",
        "--root",
        str(cache / "buildah" / "storage"),
        "--runroot",
        str(cache / "buildah" / "run"),
        "--storage-driver",
        "overlay",
        *args,
    ]


def prometheus_image(cp: ControlPlane) -> str:
    """Build (or reuse) the Prometheus image and make sure the node's containerd has it; its reference."""
    if not PROMETHEUS_BINARY.is_file():
        raise RuntimeError(
            f"{PROMETHEUS_BINARY} is missing: apt-get install prometheus (scripts/system-deps.sh)"
        )
    files = [PROMETHEUS_BINARY, *(Path(os.path.realpath(lib)) for lib in _LIBS)]
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f).encode())
        digest.update(f.read_bytes())
    ref = f"{IMAGE_NAME}:{digest.hexdigest()[:16]}"
    if ref in cp.ctr("images", "ls", "-q").stdout.decode().split():
        return ref
    with tempfile.TemporaryDirectory(prefix="ferryman-e2e-prom-") as tmp:
        policy = Path(tmp) / "policy.json"
        policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')  # local files only
        if subprocess.run(_buildah("inspect", "--type", "image", ref), capture_output=True).returncode != 0:
            container = _run(*_buildah("from", "--signature-policy", str(policy), "scratch")).strip()
            try:
                _run(*_buildah("copy", "--quiet", container, str(PROMETHEUS_BINARY), "/bin/prometheus"))
                for lib, real in zip(_LIBS, files[1:], strict=True):
                    _run(*_buildah("copy", "--quiet", container, str(real), lib))
                _run(
                    *_buildah(
                        "config",
                        "--entrypoint",
                        json.dumps(["/bin/prometheus"]),
                        "--user",
                        f"{UID}:{UID}",
                        "--workingdir",
                        "/prometheus",
                        container,
                    )
                )
                _run(*_buildah("commit", "--quiet", container, ref))
            finally:
                subprocess.run(_buildah("rm", container), capture_output=True, check=False)
        archive = Path(tmp) / "prometheus.tar"
        _run(
            *_buildah(
                "push", "--quiet", "--signature-policy", str(policy), ref, f"docker-archive:{archive}:{ref}"
            )
        )
        cp.import_image(archive)
    return ref


# -- Prometheus with the PodMonitor discovery sidecar ------------------------------------------------------
SD_SCRIPT = Path(__file__).with_name("podmonitor_sd.py")
SD_FILE = "/sd/targets.json"


def config() -> dict[str, Any]:
    """One job whose targets (and their labels, path, interval) come from the sidecar's file."""
    return {
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [
            {
                "job_name": "podmonitors",
                "honor_labels": False,
                "file_sd_configs": [{"files": [SD_FILE], "refresh_interval": "2s"}],
            }
        ],
    }


def manifests(*, image: str, sd_image: str, release: str) -> list[dict[str, Any]]:
    """Prometheus (``image``) and its PodMonitor discovery sidecar (``sd_image``: any image with python3)
    selecting PodMonitors labelled ``release=<release>``."""
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "ferryman-e2e"}
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": labels}
    container_security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "ferryman-e2e-prometheus", "labels": labels},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                {
                    "apiGroups": ["monitoring.coreos.com"],
                    "resources": ["podmonitors"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "ferryman-e2e-prometheus", "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "ferryman-e2e-prometheus",
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {
                "prometheus.yml": yaml.safe_dump(config(), sort_keys=False),
                "podmonitor_sd.py": SD_SCRIPT.read_text(),
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": UID,
                            "runAsGroup": UID,
                            "fsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": NAME,
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": [
                                    "--config.file=/etc/prometheus/prometheus.yml",
                                    "--storage.tsdb.path=/prometheus",
                                    f"--web.listen-address=0.0.0.0:{PORT}",
                                    "--storage.tsdb.retention.time=2h",
                                    "--web.enable-lifecycle",
                                    "--log.level=info",
                                ],
                                "ports": [{"name": "web", "containerPort": PORT}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/-/ready", "port": "web"},
                                    "periodSeconds": 2,
                                },
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "128Mi"},
                                    "limits": {"memory": "1Gi"},
                                },
                                "securityContext": container_security,
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
                                    {"name": "data", "mountPath": "/prometheus"},
                                    {"name": "sd", "mountPath": "/sd", "readOnly": True},
                                ],
                            },
                            {
                                "name": "podmonitor-sd",
                                "image": sd_image,
                                "imagePullPolicy": "IfNotPresent",
                                "command": ["python3", "/etc/prometheus/podmonitor_sd.py", SD_FILE, release],
                                "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
                                "resources": {
                                    "requests": {"cpu": "20m", "memory": "64Mi"},
                                    "limits": {"memory": "256Mi"},
                                },
                                "securityContext": container_security,
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
                                    {"name": "sd", "mountPath": "/sd"},
                                ],
                            },
                        ],
                        "volumes": [
                            {"name": "config", "configMap": {"name": NAME}},
                            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                            {"name": "sd", "emptyDir": {"sizeLimit": "16Mi"}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"selector": labels, "ports": [{"name": "web", "port": PORT, "targetPort": "web"}]},
        },
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.e2e.promstack [RUN_DIR]``: put the test Prometheus on a running test cluster (the
    chart's ci/e2e-values.yaml points the operator at it; docs/helm.md, "Try the chart on the test
    cluster")."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.e2e.promstack", description=main.__doc__)
    parser.add_argument(
        "run_dir", nargs="?", default=os.environ.get("FERRYMAN_CLUSTER_RUN_DIR", ".cache/cluster")
    )
    parser.add_argument("--release", default="ferryman-e2e", help="the PodMonitors' release label to select")
    parser.add_argument("--images-env", default=".cache/images.env", help="written by make images")
    args = parser.parse_args(argv)
    cp = ControlPlane.attach(args.run_dir)
    values = dict(
        line.split("=", 1)
        for line in Path(args.images_env).read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    cp.apply(
        manifests(image=prometheus_image(cp), sd_image=values["FERRYMAN_LOCAL_IMAGE"], release=args.release)
    )
    cp.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{NAME}", "--timeout=180s")
    print(
        f"prometheus: {url()} (from the host: "
        f"http://{cp.get_json('-n', NAMESPACE, 'service', NAME)['spec']['clusterIP']}:{PORT})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
