"""The routing table as a document: the ``routes.json`` the operator writes and a cluster gateway reads. Pure.

On Kubernetes the operator owns the traffic split: it writes the current :class:`~ferryman.routing.RouteTable`
into a ConfigMap (key :data:`ROUTES_KEY`) mounted into the gateway pods, and rewrites it at every rollout
step, promotion or rollback. The gateway re-reads the file when it changes (kubelet swaps ConfigMap volumes
atomically) and swaps its table in one assignment, exactly as ``ferryman up`` does in-process.

Format (``format`` = :data:`FORMAT`; unknown keys are rejected, so a typo never routes silently)::

    {
      "format": "ferryman.routes/v1",
      "model": "breast-cancer",
      "versions": ["v1", "v2"],                    # every servable version (pins may target any)
      "weights": [{"version": "v1", "weight": 95},  # ordered: the order fixes the sticky hash ranges
                  {"version": "v2", "weight": 5}],  # sums to 100
      "stable": "v1",
      "candidate": "v2",                           # or null
      "sticky": {"source": "header", "name": "x-user-id"},   # A/B only, else null
      "shadow": {"version": "v2", "percent": 10.0},          # or null
      "pinHeader": "x-ferryman-version",
      "salt": "breast-cancer",
      "backends": {"v1": "http://breast-cancer-v1.ns.svc:8080", ...},  # where each version answers
      "grpcBackends": {"v1": "breast-cancer-v1.ns.svc:8081", ...}      # its gRPC port (host:port), if any
    }

``backends`` is optional: a gateway that serves the versions in-process ignores it. ``grpcBackends`` is
optional too: present when the versions serve the v2 gRPC service, for a gateway that forwards gRPC.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ferryman.errors import SpecError
from ferryman.routing import RouteTable
from ferryman.spec import StickyKey, StickySource

FORMAT = "ferryman.routes/v1"
ROUTES_KEY = "routes.json"

_KEYS = {
    "format",
    "model",
    "versions",
    "weights",
    "stable",
    "candidate",
    "sticky",
    "shadow",
    "pinHeader",
    "salt",
    "backends",
    "grpcBackends",
}


def table_to_dict(
    table: RouteTable,
    *,
    backends: Mapping[str, str] | None = None,
    grpc_backends: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": FORMAT,
        "model": table.model,
        "versions": list(table.versions),
        "weights": [{"version": v, "weight": w} for v, w in table.weights],
        "stable": table.stable,
        "candidate": table.candidate,
        "sticky": {"source": table.sticky.source.value, "name": table.sticky.name} if table.sticky else None,
        "shadow": {"version": table.shadow, "percent": table.shadow_percent} if table.shadow else None,
        "pinHeader": table.pin_header,
        "salt": table.salt,
    }
    if backends is not None:
        doc["backends"] = {v: backends[v] for v in table.versions if v in backends}
    if grpc_backends is not None:
        doc["grpcBackends"] = {v: grpc_backends[v] for v in table.versions if v in grpc_backends}
    return doc


def table_to_json(
    table: RouteTable,
    *,
    backends: Mapping[str, str] | None = None,
    grpc_backends: Mapping[str, str] | None = None,
) -> str:
    """Stable text (sorted keys, fixed separators): equal tables give byte-equal ConfigMaps."""
    doc = table_to_dict(table, backends=backends, grpc_backends=grpc_backends)
    return json.dumps(doc, sort_keys=True, indent=1) + "\n"


def table_from_dict(doc: Any, *, source: str = ROUTES_KEY) -> RouteTable:
    """Parse and validate a routes document; a bad one raises :class:`SpecError` naming the problem."""
    if not isinstance(doc, dict):
        raise SpecError(f"{source}: expected a JSON object")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise SpecError(f"{source}: unknown field(s): {', '.join(unknown)}")
    if doc.get("format") != FORMAT:
        raise SpecError(f"{source}: format must be {FORMAT!r}, got {doc.get('format')!r}")
    try:
        versions = tuple(_str(v, "versions[]") for v in doc["versions"])
        weights = tuple(
            (_str(w["version"], "weights[].version"), _int(w["weight"], "weights[].weight"))
            for w in doc["weights"]
        )
        sticky_doc = doc.get("sticky")
        sticky = (
            StickyKey(source=StickySource(sticky_doc["source"]), name=_str(sticky_doc["name"], "sticky.name"))
            if sticky_doc
            else None
        )
        shadow_doc = doc.get("shadow")
        return RouteTable(
            model=_str(doc["model"], "model"),
            versions=versions,
            weights=weights,
            stable=_str(doc["stable"], "stable"),
            candidate=_opt_str(doc.get("candidate"), "candidate"),
            sticky=sticky,
            shadow=_str(shadow_doc["version"], "shadow.version") if shadow_doc else None,
            shadow_percent=float(shadow_doc["percent"]) if shadow_doc else 0.0,
            pin_header=_str(doc.get("pinHeader", "x-ferryman-version"), "pinHeader").lower(),
            salt=_str(doc.get("salt", ""), "salt"),
        )
    except KeyError as err:
        raise SpecError(f"{source}: missing field {err.args[0]!r}") from err
    except (TypeError, ValueError) as err:
        raise SpecError(f"{source}: {err}") from err


def table_from_json(text: str | bytes, *, source: str = ROUTES_KEY) -> RouteTable:
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise SpecError(f"{source}: not valid JSON: {err}") from err
    return table_from_dict(doc, source=source)


def backends_from_dict(doc: Mapping[str, Any]) -> dict[str, str]:
    """The per-version upstream URLs of a routes document (empty when the gateway serves in-process)."""
    backends = doc.get("backends") or {}
    if not isinstance(backends, dict) or not all(isinstance(v, str) for v in backends.values()):
        raise SpecError(f"{ROUTES_KEY}: backends must map version names to URLs")
    return dict(backends)


def grpc_backends_from_dict(doc: Mapping[str, Any]) -> dict[str, str]:
    """The per-version gRPC addresses (``host:port``) of a routes document (empty: the versions serve no
    gRPC)."""
    backends = doc.get("grpcBackends") or {}
    if not isinstance(backends, dict) or not all(
        isinstance(v, str) and _is_address(v) for v in backends.values()
    ):
        raise SpecError(f"{ROUTES_KEY}: grpcBackends must map version names to host:port addresses")
    return dict(backends)


def _is_address(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and "/" not in text and port.isdigit() and 0 < int(port) < 65536)


def _str(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} must be a non-empty string")
    return value


def _opt_str(value: Any, field: str) -> str | None:
    return None if value is None else _str(value, field)


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field} must be an integer")
    return value
