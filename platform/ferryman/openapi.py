"""OpenAPI 3.0 documents for the native runtime and the gateway (served at ``GET /openapi.json``).

The document describes the server it is served by: the ``model`` and ``version`` path parameters are
enumerations of what is loaded, and the request examples are built from each model's signature, so a
client generator — or a fuzzer — exercises the real inference path. Every error is ``{"error": "..."}``.

    document(
        kind="runtime",
        models={"breast-cancer": ModelDoc(versions=["v1", "v2"], inputs=[...], outputs=[...])},
    )

``kind="gateway"`` adds the version-pin header (and the sticky A/B header, when there is one);
``api_keys=True`` declares the bearer / ``X-API-Key`` schemes on everything but health and metrics.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ferryman import __version__
from ferryman.protocol.datatypes import V2_TO_NUMPY

OPENAPI_VERSION = "3.0.3"
DATATYPES = sorted(V2_TO_NUMPY)


@dataclass(frozen=True)
class ModelDoc:
    """What the document needs to know about one served model (v2 metadata form for the tensors)."""

    versions: Sequence[str]
    inputs: Sequence[Mapping[str, Any]] = field(default_factory=list)
    outputs: Sequence[Mapping[str, Any]] = field(default_factory=list)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Mapping[str, Any], *, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": dict(schema)}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": _json(_ref("Error"))}
    if retry_after:
        out["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before retrying",
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    return out


def _schemas() -> dict[str, Any]:
    integer_shape = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    metadata_shape = {
        "type": "array",
        "items": {"type": "integer", "minimum": -1},
        "description": "-1 marks a dynamic dimension",
    }
    tensor_meta = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string", "enum": DATATYPES},
            "shape": metadata_shape,
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
            "example": {"error": "inputs[0] (input).shape: must be a list of non-negative integers"},
        },
        "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
        "Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
        "ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "TensorMetadata": tensor_meta,
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                "outputs": {"type": "array", "items": _ref("TensorMetadata")},
                "parameters": {"type": "object"},
            },
        },
        "RequestInput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "description": "JSON data (row-major, flat or nested) or, with the binary extension, "
            "parameters.binary_data_size bytes after the JSON header",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "shape": integer_shape,
                "datatype": {"type": "string", "enum": DATATYPES},
                "parameters": {
                    "type": "object",
                    "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                },
                "data": {"type": "array", "items": {}},
            },
        },
        "RequestOutput": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
                "inputs": {"type": "array", "minItems": 1, "items": _ref("RequestInput")},
                "outputs": {"type": "array", "items": _ref("RequestOutput")},
            },
        },
        "ResponseOutput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string"},
                "shape": integer_shape,
                "datatype": {"type": "string", "enum": DATATYPES},
                "parameters": {"type": "object"},
                "data": {"type": "array", "items": {}},
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "model_version", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": _ref("ResponseOutput")},
            },
        },
        "PredictRequest": {
            "type": "object",
            "required": ["instances"],
            "description": "KServe v1: one row per instance; for several inputs each instance is an object "
            "keyed by input name",
            "properties": {"instances": {"type": "array", "minItems": 1, "items": {}}},
        },
        "PredictResponse": {
            "type": "object",
            "required": ["predictions", "model_name", "model_version"],
            "properties": {
                "predictions": {"type": "array", "items": {}},
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["models"],
            "properties": {"models": {"type": "array", "items": {"type": "string"}}},
        },
        "ModelStatus": {
            "type": "object",
            "required": ["name", "ready", "model_version"],
            "properties": {
                "name": {"type": "string"},
                "ready": {"type": "boolean"},
                "model_version": {"type": "string"},
            },
        },
    }


def _example_value(datatype: str) -> Any:
    if datatype == "BYTES":
        return "example"
    if datatype == "BOOL":
        return False
    return 0.5 if datatype.startswith("FP") else 1


def example_request(inputs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A valid v2 request for a signature: dynamic dimensions become 1, every value a plain constant."""
    items = []
    for t in inputs:
        shape = [1 if d is None or d < 0 else int(d) for d in t.get("shape", [])]
        count = math.prod(shape)
        items.append(
            {
                "name": t["name"],
                "shape": shape,
                "datatype": t["datatype"],
                "data": [_example_value(str(t["datatype"]))] * count,
            }
        )
    return {"inputs": items}


def example_instances(inputs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """A valid v1 body for a signature (None when no single row is expressible)."""
    if not inputs:
        return None
    rows = []
    for t in inputs:
        shape = [1 if d is None or d < 0 else int(d) for d in t.get("shape", [])][1:]
        value: Any = _example_value(str(t["datatype"]))
        for d in reversed(shape):
            value = [copy.deepcopy(value) for _ in range(d)]
        rows.append(value)
    if len(inputs) == 1:
        return {"instances": [rows[0]]}
    return {"instances": [{t["name"]: r for t, r in zip(inputs, rows, strict=True)}]}


class _Builder:
    def __init__(
        self,
        *,
        kind: str,
        models: Mapping[str, ModelDoc],
        api_keys: bool,
        route_headers: Sequence[str],
        metrics: bool,
    ) -> None:
        self.kind = kind
        self.metrics = metrics
        self.models = models
        self.api_keys = api_keys
        self.route_headers = route_headers
        self.paths: dict[str, Any] = {}
        names = sorted(models)
        versions = sorted({v for m in models.values() for v in m.versions})
        self.model_param = {
            "name": "model",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": names} if names else {"type": "string"},
        }
        self.version_param = {
            "name": "version",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": versions} if versions else {"type": "string"},
        }
        first = models[names[0]] if names else None
        self.infer_example = example_request(first.inputs) if first and first.inputs else None
        self.predict_example = example_instances(first.inputs) if first else None

    def op(
        self,
        path: str,
        method: str,
        *,
        summary: str,
        tag: str,
        ok: Mapping[str, Any],
        params: Sequence[Any] = (),
        body: Mapping[str, Any] | None = None,
        errors: Sequence[int] = (),
        public: bool = False,
        ok_status: str = "200",
    ) -> None:
        responses: dict[str, Any] = {ok_status: ok}
        texts = {
            400: "malformed request or input that does not match the model",
            404: "unknown model, version or route",
            408: "the request was not received in time",
            413: "request body too large",
            503: "not ready, or too many requests in flight",
        }
        for status in errors:
            responses[str(status)] = _error(texts[status], retry_after=status == 503)
        if self.api_keys and not public:
            responses["401"] = {
                **_error("missing or invalid API key"),
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            }
        operation: dict[str, Any] = {
            "summary": summary,
            "tags": [tag],
            "operationId": _operation_id(method, path),
            "responses": responses,
        }
        if params:
            operation["parameters"] = list(params)
        if body is not None:
            operation["requestBody"] = body
        if public and self.api_keys:
            operation["security"] = []
        self.paths.setdefault(path, {})[method] = operation

    def build(self) -> dict[str, Any]:
        health = "health"
        self.op(
            "/v2/health/live",
            "get",
            summary="liveness",
            tag=health,
            public=True,
            ok={"description": "the process is alive", "content": _json(_ref("Live"))},
        )
        self.op(
            "/v2/health/ready",
            "get",
            summary="readiness: every model loaded",
            tag=health,
            public=True,
            ok={"description": "ready", "content": _json(_ref("Ready"))},
            errors=[503],
        )
        self.op(
            "/v1/health/live",
            "get",
            summary="liveness (v1 path)",
            tag=health,
            public=True,
            ok={"description": "the process is alive", "content": _json(_ref("Live"))},
        )
        self.op(
            "/healthz",
            "get",
            summary="liveness (Kubernetes probe path)",
            tag=health,
            public=True,
            ok={"description": "the process is alive", "content": _json(_ref("Live"))},
        )
        self.op(
            "/readyz",
            "get",
            summary="readiness (Kubernetes probe path)",
            tag=health,
            public=True,
            ok={"description": "ready", "content": _json(_ref("Ready"))},
            errors=[503],
        )
        if self.metrics:
            self.op(
                "/metrics",
                "get",
                summary="Prometheus metrics",
                tag="observability",
                public=True,
                ok={
                    "description": "Prometheus text exposition",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            )
        self.op(
            "/openapi.json",
            "get",
            summary="this document",
            tag="meta",
            ok={"description": "OpenAPI 3.0 document", "content": _json({"type": "object"})},
        )
        self._v2()
        self._v1()
        return self.document()

    def _v2(self) -> None:
        tag, m, v = "v2 (Open Inference Protocol)", self.model_param, self.version_param
        self.op(
            "/v2",
            "get",
            summary="server metadata",
            tag=tag,
            ok={"description": "server metadata", "content": _json(_ref("ServerMetadata"))},
        )
        for prefix, params in (
            ("/v2/models/{model}", [m]),
            ("/v2/models/{model}/versions/{version}", [m, v]),
        ):
            self.op(
                prefix,
                "get",
                summary="model metadata",
                tag=tag,
                params=params,
                errors=[404],
                ok={"description": "model metadata", "content": _json(_ref("ModelMetadata"))},
            )
            self.op(
                f"{prefix}/ready",
                "get",
                summary="model readiness",
                tag=tag,
                params=params,
                errors=[404, 503],
                ok={"description": "ready", "content": _json(_ref("ModelReady"))},
            )
            body = {
                "required": True,
                "content": {
                    **_json(_ref("InferenceRequest"), example=self.infer_example),
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
                "description": "JSON, or the binary tensor extension (JSON header of "
                "Inference-Header-Content-Length bytes followed by the raw tensors)",
            }
            binary_header = {
                "name": "Inference-Header-Content-Length",
                "in": "header",
                "required": False,
                "schema": {"type": "integer", "minimum": 0},
            }
            self.op(
                f"{prefix}/infer",
                "post",
                summary="inference",
                tag=tag,
                params=[*params, binary_header, *self._routing_params(pinned=len(params) > 1)],
                body=body,
                errors=[400, 404, 408, 413, 503],
                ok={
                    "description": "the model's outputs (binary ones after the JSON header)",
                    "content": {
                        **_json(_ref("InferenceResponse")),
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
            )

    def _v1(self) -> None:
        tag, m, v = "v1 (KServe)", self.model_param, self.version_param
        self.op(
            "/v1/models",
            "get",
            summary="served models",
            tag=tag,
            ok={"description": "model names", "content": _json(_ref("ModelList"))},
        )
        for prefix, params in (
            ("/v1/models/{model}", [m]),
            ("/v1/models/{model}/versions/{version}", [m, v]),
        ):
            self.op(
                prefix,
                "get",
                summary="model status",
                tag=tag,
                params=params,
                errors=[404],
                ok={"description": "model status", "content": _json(_ref("ModelStatus"))},
            )
            self.op(
                f"{prefix}:predict",
                "post",
                summary="prediction",
                tag=tag,
                params=[*params, *self._routing_params(pinned=len(params) > 1)],
                body={
                    "required": True,
                    "content": _json(_ref("PredictRequest"), example=self.predict_example),
                },
                errors=[400, 404, 408, 413, 503],
                ok={
                    "description": "predictions, one per instance",
                    "content": _json(_ref("PredictResponse")),
                },
            )

    def _routing_params(self, *, pinned: bool) -> list[dict[str, Any]]:
        if self.kind != "gateway":
            return []
        out = []
        for i, header in enumerate(self.route_headers):
            if pinned and i == 0:
                continue  # the path already pins the version
            desc = (
                "pin the request to this version (overrides the traffic split)"
                if i == 0
                else "sticky A/B assignment key"
            )
            schema = self.version_param["schema"] if i == 0 else {"type": "string"}
            out.append(
                {"name": header, "in": "header", "required": False, "description": desc, "schema": schema}
            )
        return out

    def document(self) -> dict[str, Any]:
        title = "ferryman gateway" if self.kind == "gateway" else "ferryman runtime"
        description = (
            "KServe v1 and Open Inference Protocol v2 over one model's versions, routed by the "
            "rollout's traffic split"
            if self.kind == "gateway"
            else "KServe v1 and Open Inference Protocol v2 served by ONNX Runtime"
        )
        doc: dict[str, Any] = {
            "openapi": OPENAPI_VERSION,
            "info": {"title": title, "version": __version__, "description": description},
            "paths": self.paths,
            "components": {"schemas": _schemas()},
        }
        if self.api_keys:
            doc["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            doc["security"] = [{"bearer": []}, {"apiKey": []}]
        return doc


def _operation_id(method: str, path: str) -> str:
    words = [w for w in path.replace("{", "").replace("}", "").replace(":", "/").split("/") if w]
    return method + "".join(w[:1].upper() + w[1:] for w in words)


def document(
    *,
    kind: str = "runtime",
    models: Mapping[str, ModelDoc] | None = None,
    api_keys: bool = False,
    route_headers: Sequence[str] = (),
    metrics: bool = True,
) -> dict[str, Any]:
    """The OpenAPI document of a runtime (``kind="runtime"``) or a gateway (``kind="gateway"``).

    ``route_headers``: for the gateway, the version-pin header first, then the sticky A/B header if any.
    ``metrics``: whether ``GET /metrics`` is served.
    """
    if kind not in ("runtime", "gateway"):
        raise ValueError(f"kind must be 'runtime' or 'gateway', not {kind!r}")
    return _Builder(
        kind=kind, models=models or {}, api_keys=api_keys, route_headers=route_headers, metrics=metrics
    ).build()
