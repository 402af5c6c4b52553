"""Reading a ModelDeployment and its gateway the way a person would: ``kubectl get mdep``, the status, the
gateway's own ``/metrics``.

* :func:`get_md`, :func:`phase`, :func:`rollout` — the resource and its ``status.rollout``.
* :func:`printed_row` — the columns of ``kubectl get mdep NAME`` (its printer columns, as a person sees them).
* :func:`gateway_weights` — the split the gateway applies right now (``ferryman_traffic_weight_ratio`` on
  its ``/metrics``), which trails the routes ConfigMap by the kubelet's volume sync.
* :func:`wait_phase` — poll until the phase is one of the wanted ones, with the rollout's history and the
  namespace's diagnostics in the error.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.cluster.controlplane import ControlPlane
from tests.e2e.kube import diagnostics, wait_for
from tests.helpers.prometheus import parse_exposition


def get_md(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = cp.get_json("-n", namespace, "mdep", name)
    return doc


def status(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    st: dict[str, Any] = get_md(cp, namespace, name).get("status") or {}
    return st


def rollout(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    r: dict[str, Any] = status(cp, namespace, name).get("rollout") or {}
    return r


def printed_row(cp: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    """``kubectl get mdep NAME`` parsed by its header (TRAFFIC holds spaces: split on the header's
    columns)."""
    text = cp.kubectl("-n", namespace, "get", "mdep", name).stdout
    header, row = text.splitlines()[:2]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    cols = {}
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else None
        cols[header[start:end].strip()] = row[start:end].strip()
    cols["_text"] = text
    return cols


def gateway_weights(base: str, model: str) -> dict[str, float]:
    samples = parse_exposition(httpx.get(f"{base}/metrics", timeout=5).text)
    return {
        dict(labels)["version"]: value
        for (n, labels), value in samples.items()
        if n == "ferryman_traffic_weight_ratio" and dict(labels).get("model") == model
    }


def wait_phase(
    cp: ControlPlane,
    namespace: str,
    name: str,
    phases: tuple[str, ...],
    *,
    timeout: float,
    bad: tuple[str, ...] = (),
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        st = status(cp, namespace, name)
        if st.get("phase") in bad:
            raise AssertionError(f"{name} went {st.get('phase')}: {history(st)}")
        return st if st.get("phase") in phases else None

    def explain() -> str:
        st = status(cp, namespace, name)
        return f"status: phase={st.get('phase')} {history(st)}\n{diagnostics(cp, namespace)}"

    try:
        found: dict[str, Any] = wait_for(
            reached, timeout=timeout, interval=1, what=f"{name} to be {'/'.join(phases)}", on_timeout=explain
        )
    except AssertionError as err:
        if "went" in str(err):
            raise AssertionError(f"{err}\n{diagnostics(cp, namespace)}") from err
        raise
    return found


def history(st: dict[str, Any]) -> str:
    r = st.get("rollout") or {}
    lines = [f"  {h.get('action')}: {h.get('reason')} {h.get('weights')}" for h in r.get("history", [])]
    last = r.get("lastAnalysis")
    return (
        "history:\n"
        + "\n".join(lines)
        + (f"\nlastAnalysis: {last}" if last else "")
        + f"\nconditions: {st.get('conditions')}"
    )
