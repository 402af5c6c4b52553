"""The ModelDeployment CustomResourceDefinition, generated from the pydantic spec (the single source).

Pydantic's JSON schema is turned into a Kubernetes *structural* schema: ``$ref`` inlined, ``Optional``
unions collapsed, ``additionalProperties`` kept for maps, enums/minimums/patterns preserved, and
cross-field rules the schema language cannot say (weights summing to 100, increasing canary steps, names
that must refer to a version) added as CEL ``x-kubernetes-validations``. ``tests/unit/test_crd.py`` fails
when the committed CRD differs; ``tests/cluster/test_operator_crd.py`` has the real apiserver accept it
and reject invalid resources.

Defaults: the spec's pydantic defaults are written into the schema (objects default to ``{}`` so their
fields' defaults apply), so the apiserver stores every resource fully defaulted: what ``kubectl get -o
yaml`` shows is what runs, and a later change of a default in code never silently changes a stored
resource. Unknown fields: structural schemas prune them; ``kubectl`` (``--validate=strict``, the default)
and server-side apply reject them instead, naming the field.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from ferryman.spec import API_GROUP, KIND, ModelDeploymentSpec, ModelDeploymentStatus

PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["mdep", "mdeps"]
VERSION = "v1alpha1"

_DROP = {"title", "description", "examples"}
_DNS_LABEL_CEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class _FactoryDefaults(GenerateJsonSchema):
    """Also report ``default_factory`` defaults: ``{}`` for nested models (their own fields carry the
    defaults), the factory's value for lists and maps."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
            return {} if isinstance(value, BaseModel) else value
        return super().get_default_value(schema)


def _inline(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        merged = {**copy.deepcopy(defs[name]), **{k: v for k, v in schema.items() if k != "$ref"}}
        return _inline(merged, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("anyOf", "oneOf"):
            options = [o for o in value if o.get("type") != "null"]
            if len(options) == 1:
                out.update(_inline(options[0], defs))
                continue
            out[key] = [_inline(o, defs) for o in options]
        elif key == "properties":
            out[key] = {k: _inline(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _inline(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key == "$defs":
            continue
        else:
            out[key] = value
    return out


def _structural(schema: dict[str, Any], *, defaults: bool) -> dict[str, Any]:
    """Drop what Kubernetes rejects or ignores; keep descriptions; map `Any` to preserve-unknown-fields."""
    out: dict[str, Any] = {}
    desc = schema.get("description")
    if desc:
        out["description"] = desc
    if "type" not in schema and "enum" not in schema and "properties" not in schema:
        out["x-kubernetes-preserve-unknown-fields"] = True
        return out
    for key, value in schema.items():
        if key in _DROP:
            continue
        if key == "default":
            if defaults and value is not None:
                out[key] = value
        elif key == "properties":
            out[key] = {k: _structural(v, defaults=defaults) for k, v in value.items()}
        elif key == "items":
            out[key] = _structural(value, defaults=defaults)
        elif key == "additionalProperties":
            if value is False:
                continue  # structural schemas forbid unknown fields by pruning, not by this keyword
            if value is True:  # free-form map (extra="allow", dict[str, Any]): keep what clients write
                out["x-kubernetes-preserve-unknown-fields"] = True
                continue
            out[key] = _structural(value, defaults=defaults)
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        else:
            out[key] = value
    if out.get("type") == "object" and "additionalProperties" not in out and "properties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _model_schema(model: type, mode: str = "validation", *, defaults: bool) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode=mode, schema_generator=_FactoryDefaults)  # type: ignore[attr-defined]
    return _structural(_inline(raw, raw.get("$defs", {})), defaults=defaults)


def spec_schema() -> dict[str, Any]:
    schema = _model_schema(ModelDeploymentSpec, defaults=True)
    traffic = schema["properties"]["traffic"]
    traffic["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.abTest) || !has(self.abTest.weights) || size(self.abTest.weights) == 0 || "
            "self.abTest.weights.map(k, self.abTest.weights[k]).sum() == 100",
            "message": "traffic.abTest.weights must sum to 100",
        },
        {
            "rule": "!has(self.candidate) || !has(self.stable) || self.candidate != self.stable",
            "message": "traffic.candidate must differ from traffic.stable",
        },
        {
            "rule": "!has(self.strategy) || !(self.strategy in ['canary', 'blueGreen', 'shadow'])"
            " || has(self.candidate)",
            "message": "traffic.candidate is required for canary, blueGreen and shadow strategies",
        },
        {
            "rule": "!has(self.strategy) || self.strategy != 'abTest' || "
            "(has(self.abTest) && has(self.abTest.weights) && size(self.abTest.weights) > 0)",
            "message": "traffic.abTest.weights is required for the abTest strategy",
        },
    ]
    steps = traffic["properties"]["canary"]["properties"]["steps"]
    steps["x-kubernetes-validations"] = [
        {"rule": "self.all(s, s >= 1 && s <= 100)", "message": "every step must be a percentage in 1..100"},
        {"rule": "self[size(self) - 1] == 100", "message": "the last step must be 100 (full promotion)"},
        {
            "rule": "self.isSorted() && self.all(s, self.filter(t, t == s).size() == 1)",
            "message": "steps must strictly increase",
        },
    ]
    schema["x-kubernetes-validations"] = [
        {
            "rule": "self.versions.all(v, self.versions.filter(w, w.name == v.name).size() == 1)",
            "message": "version names must be unique",
        },
        {
            "rule": "!has(self.traffic) || !has(self.traffic.stable) || "
            "self.versions.exists(v, v.name == self.traffic.stable)",
            "message": "traffic.stable must name one of spec.versions",
        },
        {
            "rule": "!has(self.traffic) || !has(self.traffic.candidate) || "
            "self.versions.exists(v, v.name == self.traffic.candidate)",
            "message": "traffic.candidate must name one of spec.versions",
        },
        {
            "rule": "!has(self.traffic) || !has(self.traffic.abTest) || !has(self.traffic.abTest.weights) || "
            "self.traffic.abTest.weights.all(k, self.versions.exists(v, v.name == k))",
            "message": "traffic.abTest.weights must name versions of spec.versions",
        },
    ]
    return schema


def status_schema() -> dict[str, Any]:
    schema = _model_schema(ModelDeploymentStatus, mode="serialization", defaults=False)
    schema["x-kubernetes-preserve-unknown-fields"] = True
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}", "labels": {"app.kubernetes.io/part-of": "ferryman"}},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["ferryman", "all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Traffic", "type": "string", "jsonPath": ".status.trafficSplit"},
                        {"name": "Stable", "type": "string", "jsonPath": ".status.stable"},
                        {"name": "Candidate", "type": "string", "jsonPath": ".status.candidate"},
                        {"name": "Runtime", "type": "string", "jsonPath": ".spec.runtime", "priority": 1},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "A model served by ferryman, with its versions, budget and traffic strategy."
                            ),
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                {
                                    "rule": (
                                        "size(self.metadata.name) <= 63 && "
                                        f"self.metadata.name.matches('{_DNS_LABEL_CEL}')"
                                    ),
                                    "message": (
                                        "metadata.name must be a DNS label (at most 63 characters: "
                                        "a-z, 0-9 and '-'), it names the Services of the model"
                                    ),
                                }
                            ],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated from ferryman.spec by `ferryman crd` — do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)
