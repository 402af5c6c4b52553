"""PodMonitor service discovery for Debian's Prometheus, as a sidecar (standard library only).

Debian builds ``prometheus`` without Kubernetes service discovery (its NEWS file: "Kubernetes support has
been completely removed"), so this sidecar does what the Prometheus Operator plus ``kubernetes_sd_configs``
would: every few seconds it lists the PodMonitors labelled ``release=<RELEASE>`` (the Prometheus Operator's
``podMonitorSelector``) and every pod, keeps the pods each PodMonitor selects (namespace selector, label
selector with matchLabels/matchExpressions, the endpoint's port, not Failed/Succeeded) and writes them as
a ``file_sd_configs`` file with the labels the operator's relabelling gives (``namespace``, ``pod``,
``container``, ``endpoint``, ``job`` from ``jobLabel``) plus the endpoint's path, interval and timeout.

Run in a pod: ``python podmonitor_sd.py OUT_FILE RELEASE`` (ServiceAccount credentials). The selection is
the pure :func:`targets`, which the tests also run on the host.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def _matches(labels: dict[str, str], selector: dict[str, Any]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _namespace_selected(pm: dict[str, Any], namespace: str) -> bool:
    sel = pm["spec"].get("namespaceSelector") or {}
    if sel.get("any"):
        return True
    return namespace in (sel.get("matchNames") or [pm["metadata"]["namespace"]])


def targets(pod_monitors: list[dict[str, Any]], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """file_sd target groups: one per (PodMonitor endpoint, pod, container port) selected."""
    groups = []
    for pm in sorted(pod_monitors, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
        spec, meta = pm["spec"], pm["metadata"]
        for i, ep in enumerate(spec.get("podMetricsEndpoints") or []):
            for pod in pods:
                pmeta, status = pod["metadata"], pod.get("status") or {}
                labels = pmeta.get("labels") or {}
                if not _namespace_selected(pm, pmeta["namespace"]) or not _matches(
                    labels, spec.get("selector") or {}
                ):
                    continue
                if status.get("phase") in ("Failed", "Succeeded") or not status.get("podIP"):
                    continue
                for container in pod["spec"]["containers"]:
                    for port in container.get("ports") or []:
                        if "portNumber" in ep and port.get("containerPort") != ep["portNumber"]:
                            continue
                        if "port" in ep and port.get("name") != ep["port"]:
                            continue
                        job = (
                            labels.get(spec.get("jobLabel") or "", "")
                            or f"{meta['namespace']}/{meta['name']}"
                        )
                        target_labels = {
                            "namespace": pmeta["namespace"],
                            "pod": pmeta["name"],
                            "container": container["name"],
                            "endpoint": str(ep.get("portNumber") or ep.get("port")),
                            "job": job,
                            "__metrics_path__": ep.get("path", "/metrics"),
                            "podmonitor": f"{meta['namespace']}/{meta['name']}/{i}",
                        }
                        if ep.get("interval"):
                            target_labels["__scrape_interval__"] = ep["interval"]
                        if ep.get("scrapeTimeout"):
                            target_labels["__scrape_timeout__"] = ep["scrapeTimeout"]
                        groups.append(
                            {
                                "targets": [f"{status['podIP']}:{port['containerPort']}"],
                                "labels": target_labels,
                            }
                        )
    return groups


def _get(path: str, token: str, context: ssl.SSLContext) -> dict[str, Any]:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    req = urllib.request.Request(f"https://{host}:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=context, timeout=10) as resp:
        doc: dict[str, Any] = json.load(resp)
    return doc


def main(argv: list[str]) -> int:
    out, release = argv[1], argv[2]
    context = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    selector = urllib.parse.quote(f"release={release}")
    last = None
    while True:
        try:
            with open(f"{SA}/token") as f:
                token = f.read().strip()
            pms = _get(f"/apis/monitoring.coreos.com/v1/podmonitors?labelSelector={selector}", token, context)
            pods = _get("/api/v1/pods", token, context)
            doc = json.dumps(targets(pms["items"], pods["items"]), indent=1, sort_keys=True)
            if doc != last:
                tmp = f"{out}.tmp"
                with open(tmp, "w") as f:
                    f.write(doc)
                os.replace(tmp, out)
                print(f"podmonitor-sd: {doc.count('targets')} targets", flush=True)
                last = doc
        except Exception as err:  # keep the last file; say why (the next turn retries)
            print(f"podmonitor-sd: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
