"""The `ModelDeployment` resource: one pydantic model for local mode, the CRD schema and the operator.

The shape is exactly the Kubernetes custom resource (apiVersion/kind/metadata/spec/status), with
camelCase field names on the wire and snake_case attributes in Python. Unknown fields are rejected
everywhere, so a typo in a YAML file is an error that names its path, never a silent default.
"""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from ferryman.errors import SpecError

API_GROUP = "serving.ferryman.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "ModelDeployment"

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_VERSION_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
    )


class Runtime(StrEnum):
    native = "native"
    ray = "ray"
    kserve = "kserve"


class Strategy(StrEnum):
    static = "static"
    canary = "canary"
    blue_green = "blueGreen"
    ab_test = "abTest"
    shadow = "shadow"


class Resources(_Model):
    """CPU/memory requests and limits, in Kubernetes quantity syntax."""

    cpu: Annotated[str, Field(pattern=_QUANTITY)] = "1"
    memory: Annotated[str, Field(pattern=_QUANTITY)] = "512Mi"


class Batching(_Model):
    """Adaptive server-side batching (docs/batching.md): concurrent requests to one version become one
    ONNX Runtime run off the event loop. A request that finds nothing queued runs at once; the delay only
    lets a batch fill while another one runs."""

    max_batch_size: Annotated[int, Field(ge=1, le=4096, description="most rows in one model run")] = 32
    max_delay_ms: Annotated[
        float,
        Field(
            ge=0,
            le=1000,
            description="longest a queued request waits for its batch to fill once the run ahead of "
            "it is done",
        ),
    ] = 2.0
    max_queue_size: Annotated[
        int,
        Field(
            ge=1,
            le=65_536,
            description="requests waiting per version; beyond it a request gets 503 + Retry-After",
        ),
    ] = 256
    threads: Annotated[
        int | None,
        Field(
            ge=1,
            le=64,
            description="ONNX Runtime intra-op threads of a batched version's session (default: one "
            "per core but one, at least 1; the event loop keeps a core)",
        ),
    ] = None


class ModelVersion(_Model):
    """One servable version of the model."""

    name: Annotated[str, Field(min_length=1, max_length=40, pattern=_VERSION_NAME)]
    uri: Annotated[
        str, Field(min_length=1, description="file://, plain path, http(s):// or s3:// URI of the .onnx file")
    ]
    sha256: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$")] = None
    replicas: Annotated[int, Field(ge=0, le=100)] = 1
    resources: Resources = Field(default_factory=Resources)
    reference_data: Annotated[
        str | None, Field(description="URI of a .npy/.csv file of reference inputs for drift monitoring")
    ] = None
    batching: Annotated[
        Batching | None, Field(description="this version's batching (overrides spec.batching)")
    ] = None


class Budget(_Model):
    """The service-level objective every version is held to."""

    p99_ms: Annotated[float, Field(gt=0, le=60_000)] = 100.0
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01


class CanaryPolicy(_Model):
    steps: Annotated[list[int], Field(min_length=1, max_length=20)] = Field(
        default_factory=lambda: [5, 25, 50, 100]
    )
    interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 2
    min_requests: Annotated[int, Field(ge=0)] = 50

    @field_validator("steps")
    @classmethod
    def _steps_increase_to_100(cls, steps: list[int]) -> list[int]:
        if any(not 0 < s <= 100 for s in steps):
            raise ValueError("every step must be a percentage in 1..100")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("steps must strictly increase")
        if steps[-1] != 100:
            raise ValueError("the last step must be 100 (full promotion)")
        return steps


class BlueGreenPolicy(_Model):
    analysis_interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    min_requests: Annotated[int, Field(ge=0)] = 50
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 1
    auto_promote: bool = True


class StickySource(StrEnum):
    header = "header"
    cookie = "cookie"
    field = "field"


class StickyKey(_Model):
    """Where the A/B assignment key comes from: a header, a cookie or an input field of the request."""

    source: StickySource = StickySource.header
    name: Annotated[str, Field(min_length=1, max_length=128)] = "x-user-id"


class ABTestPolicy(_Model):
    weights: Annotated[dict[str, Annotated[int, Field(ge=0, le=100)]], Field(max_length=10)] = Field(
        default_factory=dict
    )
    sticky: StickyKey = Field(default_factory=StickyKey)

    @field_validator("weights")
    @classmethod
    def _weights_sum_to_100(cls, weights: dict[str, int]) -> dict[str, int]:
        if weights and sum(weights.values()) != 100:
            raise ValueError(f"weights must sum to 100, got {sum(weights.values())}")
        return weights


class ShadowPolicy(_Model):
    percent: Annotated[float, Field(ge=0, le=100)] = 100.0


class Traffic(_Model):
    """How requests are split between versions and how a candidate is rolled out."""

    strategy: Strategy = Strategy.static
    stable: str | None = None
    candidate: str | None = None
    canary: CanaryPolicy = Field(default_factory=CanaryPolicy)
    blue_green: BlueGreenPolicy = Field(default_factory=BlueGreenPolicy)
    ab_test: ABTestPolicy = Field(default_factory=ABTestPolicy)
    shadow: ShadowPolicy | None = None
    pin_header: Annotated[str, Field(min_length=1, max_length=128)] = "x-ferryman-version"


class Drift(_Model):
    enabled: bool = True
    window_size: Annotated[int, Field(ge=10, le=1_000_000)] = 500
    every_rows: Annotated[int, Field(ge=1)] = 250
    threshold: Annotated[
        float, Field(gt=0, le=1, description="dataset drift share that counts as drifted")
    ] = 0.5
    sample_percent: Annotated[float, Field(ge=0, le=100)] = 100.0
    windows_per_second: Annotated[
        float,
        Field(
            gt=0,
            le=1_000,
            description="rate gate: under sustained traffic keep at most this many windows' worth of "
            "rows a second (a burst of one window is kept whole)",
        ),
    ] = 2.0
    min_interval_seconds: Annotated[
        float, Field(ge=0, le=86_400, description="never compute drift for one version more often than this")
    ] = 5.0


class Limits(_Model):
    max_body_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    max_batch_rows: Annotated[int, Field(ge=1)] = 65_536
    max_elements: Annotated[int, Field(ge=1)] = 16 * 1024 * 1024
    request_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    max_in_flight: Annotated[int, Field(ge=1)] = 1024


class Metadata(_Model):
    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=_DNS_LABEL)]
    namespace: Annotated[str | None, Field(pattern=_DNS_LABEL)] = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelDeploymentSpec(_Model):
    runtime: Runtime = Runtime.native
    versions: Annotated[list[ModelVersion], Field(min_length=1, max_length=10)]
    budget: Budget = Field(default_factory=Budget)
    traffic: Traffic = Field(default_factory=Traffic)
    drift: Drift = Field(default_factory=Drift)
    batching: Annotated[
        Batching | None,
        Field(description="adaptive batching for every version (absent: each request runs on its own)"),
    ] = None
    limits: Limits = Field(default_factory=Limits)
    threads: Annotated[int, Field(ge=1, le=64, description="ONNX Runtime intra-op threads per session")] = 1

    @model_validator(mode="after")
    def _consistent(self) -> ModelDeploymentSpec:
        names = [v.name for v in self.versions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"versions: duplicate version names: {', '.join(dupes)}")
        known = set(names)
        t = self.traffic
        if t.stable is None:
            t.stable = names[0]
        for field, value in (("stable", t.stable), ("candidate", t.candidate)):
            if value is not None and value not in known:
                raise ValueError(f"traffic.{field}: unknown version {value!r} (known: {', '.join(names)})")
        for arm in t.ab_test.weights:
            if arm not in known:
                raise ValueError(
                    f"traffic.abTest.weights: unknown version {arm!r} (known: {', '.join(names)})"
                )
        if t.candidate is not None and t.candidate == t.stable:
            raise ValueError(f"traffic.candidate: must differ from traffic.stable ({t.stable!r})")
        needs_candidate = {Strategy.canary, Strategy.blue_green, Strategy.shadow}
        if t.strategy in needs_candidate and t.candidate is None:
            raise ValueError(f"traffic.candidate: required for strategy {t.strategy.value!r}")
        if t.strategy == Strategy.ab_test and not t.ab_test.weights:
            raise ValueError("traffic.abTest.weights: required for strategy 'abTest'")
        return self

    def version(self, name: str) -> ModelVersion:
        for v in self.versions:
            if v.name == name:
                return v
        raise KeyError(name)

    def batching_for(self, name: str) -> Batching | None:
        """The version's batching settings: its own, else the spec's, else None (no batching)."""
        own = self.version(name).batching
        return own if own is not None else self.batching


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None


class ModelDeploymentStatus(_Model):
    """Observed state. The rollout's own state (phase, step, weights, history) lives in `rollout`."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)

    phase: str | None = None
    observed_generation: int | None = None
    weights: dict[str, int] = Field(default_factory=dict)
    stable: str | None = None
    candidate: str | None = None
    traffic_split: str | None = None
    endpoint: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    rollout: dict[str, Any] | None = None


class ModelDeployment(_Model):
    api_version: Literal["serving.ferryman.dev/v1alpha1"] = "serving.ferryman.dev/v1alpha1"
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: Metadata
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


_SUBPATH = re.compile(r"^(?P<path>[A-Za-z]\w*(?:\.[A-Za-z]\w*|\[\d+\])*): (?P<msg>.*)$", re.DOTALL)


def format_validation_error(err: ValidationError) -> str:
    """Render pydantic errors as `path.to[0].field: message` lines, using the YAML (camelCase) names."""
    lines = []
    for e in err.errors():
        path = ""
        for part in e["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        msg = re.sub(r"^Value error, ", "", msg)
        # Cross-field checks (model validators) prefix their message with the path below their model.
        sub = _SUBPATH.match(msg)
        if sub:
            path = f"{path}.{sub['path']}" if path else sub["path"]
            msg = sub["msg"]
        lines.append(f"{path or '<root>'}: {msg}")
    return "\n".join(lines)


def parse_deployment(data: Any, *, source: str = "<spec>") -> ModelDeployment:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping with apiVersion, kind, metadata and spec")
    try:
        return ModelDeployment.model_validate(data)
    except ValidationError as err:
        raise SpecError(f"{source}: invalid ModelDeployment\n{format_validation_error(err)}") from err


def load_deployment(path: str | Path) -> ModelDeployment:
    """Load a spec file, resolving relative file URIs against the file's directory."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise SpecError(f"{p}: cannot read spec: {err.strerror}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"{p}: not valid YAML: {err}") from err
    md = parse_deployment(data, source=str(p))
    base = p.resolve().parent
    for v in md.spec.versions:
        v.uri = _resolve_local(v.uri, base)
        if v.reference_data:
            v.reference_data = _resolve_local(v.reference_data, base)
    return md


def _resolve_local(uri: str, base: Path) -> str:
    if "://" in uri or Path(uri).is_absolute():
        return uri
    return str((base / uri).resolve())
