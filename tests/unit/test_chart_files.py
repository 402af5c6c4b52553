"""The Helm chart's files: copies in sync with their sources, the generated README table, the values schema,
the example, and the contract with the operator (settings it reads, permissions it needs).

No sockets: files are compared directly; where rendering is needed the real ``helm template`` runs (a local
binary, no cluster). ``bash scripts/chart-sync.sh`` fixes every "stale copy" failure here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from tests.helpers import helm

ROOT = helm.REPO_ROOT
CHART = helm.CHART
SYNC_SCRIPT = ROOT / "scripts" / "chart-sync.sh"


def _load_helm_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ferryman_helm_docs", ROOT / "scripts" / "helm-docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


helm_docs = _load_helm_docs()


# -- copies ---------------------------------------------------------------------------------------------
def _sync_pairs() -> list[tuple[str, str]]:
    """(source, copy) pairs from scripts/chart-sync.sh, plus one per dashboard."""
    text = SYNC_SCRIPT.read_text()
    block = re.search(r"^PAIRS=\((?P<body>.*?)^\)", text, re.MULTILINE | re.DOTALL)
    assert block, "no PAIRS=( ... ) in scripts/chart-sync.sh"
    pairs = [tuple(p.split(":", 1)) for p in re.findall(r'"([^"]+)"', block["body"])]
    for dashboard in sorted((ROOT / "monitoring" / "dashboards").glob("*.json")):
        pairs.append((f"monitoring/dashboards/{dashboard.name}", f"files/dashboards/{dashboard.name}"))
    return [(src, dst) for src, dst in pairs]


SYNC_PAIRS = _sync_pairs()


def test_sync_list_covers_the_chart_inputs() -> None:
    copies = {dst for _, dst in SYNC_PAIRS}
    assert "crds/modeldeployments.yaml" in copies
    assert "files/alerts/ferryman-rules.yaml" in copies
    assert "files/operator-rbac.yaml" in copies
    assert "files/kserve/clusterservingruntime.yaml" in copies
    assert "files/loadtest/loadtests/locustfile.py" in copies
    assert any(d.startswith("files/dashboards/") for d in copies), "no dashboard in monitoring/dashboards"
    # Every copied file the chart holds has a source (nothing stale lingers after a source is removed).
    held = {str(p.relative_to(CHART)) for p in (CHART / "files").rglob("*") if p.is_file()}
    held |= {str(p.relative_to(CHART)) for p in (CHART / "crds").glob("*")}
    own = {"files/loadtest/ferryman_budget_gate.py"}  # the chart's own code, not a copy
    assert held - own == copies


@pytest.mark.parametrize(("source", "copy"), SYNC_PAIRS, ids=[dst for _, dst in SYNC_PAIRS])
def test_copy_equals_source(source: str, copy: str) -> None:
    src, dst = ROOT / source, CHART / copy
    assert src.is_file(), f"{source} is missing"
    assert dst.is_file(), f"charts/ferryman/{copy} is missing: run bash scripts/chart-sync.sh"
    assert dst.read_bytes() == src.read_bytes(), (
        f"charts/ferryman/{copy} differs from {source}: run bash scripts/chart-sync.sh"
    )


def test_chart_crd_serves_modeldeployments() -> None:
    """The chart installs the operator's CRD (a byte-for-byte copy, see above) with its status subresource."""
    chart_crd = yaml.safe_load((CHART / "crds" / "modeldeployments.yaml").read_text())
    assert chart_crd["kind"] == "CustomResourceDefinition"
    assert chart_crd["metadata"]["name"] == "modeldeployments.serving.ferryman.dev"
    storage = [v for v in chart_crd["spec"]["versions"] if v["storage"]]
    assert [v["name"] for v in storage] == ["v1alpha1"]
    assert storage[0]["subresources"] == {"status": {}}


def test_only_crds_in_crds_dir() -> None:
    for path in (CHART / "crds").iterdir():
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] == "CustomResourceDefinition", path.name


def test_dashboards_are_grafana_json_with_template_variables() -> None:
    for path in sorted((CHART / "files" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        assert dashboard.get("uid") and dashboard.get("title") and dashboard.get("panels"), path.name
        variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
        assert {"namespace", "model", "version"} <= variables, path.name
        # ConfigMaps hold at most 1 MiB.
        assert path.stat().st_size < 900 * 1024, path.name


# -- README table -----------------------------------------------------------------------------------------
def test_readme_values_table_is_up_to_date() -> None:
    readme = (CHART / "README.md").read_text()
    values = (CHART / "values.yaml").read_text()
    assert helm_docs.render_readme(readme, values) == readme, (
        "charts/ferryman/README.md values table is stale: run python scripts/helm-docs.py"
    )


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        out: list[str] = []
        for key, value in node.items():
            out += _leaf_paths(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [prefix]


def test_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = {d.key for d in helm_docs.parse(text)}
    undocumented = [
        leaf
        for leaf in _leaf_paths(yaml.safe_load(text))
        if not any(leaf == d or leaf.startswith(d + ".") for d in documented)
    ]
    assert undocumented == [], f"values without a `# --` comment (on them or a parent): {undocumented}"
    assert all(d.description for d in helm_docs.parse(text))


def test_helm_docs_parser_conventions() -> None:
    text = (
        "# -- top-level string\n"
        "name: x\n"
        "group:\n"
        "  # -- first line\n"
        "  # continued here\n"
        "  count: 3\n"
        "  undocumented: true\n"
        "  # -- (string) a typed override\n"
        "  # @default -- the release name\n"
        "  label: ''\n"
        "  # -- a list\n"
        "  items:\n"
        "    - a\n"
        "    - b\n"
        "# -- a map\n"
        "extra: {}\n"
    )
    docs = {d.key: d for d in helm_docs.parse(text)}
    assert list(docs) == ["name", "group.count", "group.label", "group.items", "extra"]
    assert docs["name"].type == "string" and docs["name"].default == '`"x"`'
    assert docs["group.count"].description == "first line continued here"
    assert docs["group.count"].type == "int" and docs["group.count"].default == "`3`"
    assert docs["group.label"].type == "string" and docs["group.label"].default == "`the release name`"
    assert docs["group.label"].description == "a typed override"
    assert docs["group.items"].type == "list" and docs["group.items"].default == '`["a","b"]`'
    assert docs["extra"].type == "object"
    table = helm_docs.table(list(docs.values()))
    assert table.splitlines()[0] == "| Key | Type | Default | Description |"
    assert "| group.count | int | `3` | first line continued here |" in table


def test_helm_docs_check_mode_detects_a_stale_table(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "values.yaml").write_text("# -- the answer\nanswer: 42\n")
    (chart / "README.md").write_text(f"# t\n\n{helm_docs.START}\nold\n{helm_docs.END}\nfooter\n")
    assert helm_docs.main(["--chart", str(chart), "--check"]) == 1
    assert helm_docs.main(["--chart", str(chart)]) == 0
    assert helm_docs.main(["--chart", str(chart), "--check"]) == 0
    readme = (chart / "README.md").read_text()
    assert "| answer | int | `42` | the answer |" in readme and readme.endswith("footer\n")


# -- values.schema.json -------------------------------------------------------------------------------------
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("values_file", [CHART / "values.yaml", *helm.CI_VALUES], ids=lambda p: p.name)
def test_defaults_and_ci_scenarios_satisfy_the_schema(values_file: Path) -> None:
    values = yaml.safe_load(values_file.read_text()) or {}
    jsonschema.Draft7Validator(SCHEMA).validate(_merge(DEFAULTS, values))


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {k: _merge(base.get(k), over[k]) if k in base else over[k] for k in over} | {
            k: v for k, v in base.items() if k not in over
        }
    return over


def _schema_paths(node: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of every property the schema declares (walking nested ``properties``)."""
    out: set[str] = set()
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        out |= {path} | _schema_paths(sub, path)
    return out


def _value_paths(node: Any, prefix: str = "", *, schema: dict[str, Any] = SCHEMA) -> set[str]:
    """Dotted paths of values.yaml, not descending into what the schema treats as a free-form map
    (labels, resources, security contexts: objects without declared ``properties``)."""
    out: set[str] = set()
    if isinstance(node, dict) and "properties" in schema:
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            out |= {path} | _value_paths(value, path, schema=schema["properties"].get(key, {}))
    return out


def test_schema_declares_exactly_the_values() -> None:
    """Every values.yaml key is declared in the schema, and the schema declares no key values.yaml lacks."""
    schema_paths, value_paths = _schema_paths(SCHEMA), _value_paths(DEFAULTS)
    assert sorted(value_paths - schema_paths) == [], "values.yaml keys the schema does not declare"
    assert sorted(schema_paths - value_paths) == [], "schema properties values.yaml does not have"


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"operator": {"replicas": -1}}, ["operator", "replicas"]),
        ({"operator": {"replicas": "two"}}, ["operator", "replicas"]),
        ({"operatr": {}}, []),
        ({"operator": {"logLevel": "verbose"}}, ["operator", "logLevel"]),
        ({"monitoring": {"podMonitor": {"interval": "fast"}}}, ["monitoring", "podMonitor", "interval"]),
        ({"loadtest": {"budget": {"maxErrorRate": 2}}}, ["loadtest", "budget", "maxErrorRate"]),
        ({"operator": {"namespaces": ["Models"]}}, ["operator", "namespaces", 0]),
        ({"prometheus": {"url": "prometheus:9090"}}, ["prometheus", "url"]),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], path: list[Any]) -> None:
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors(_merge(DEFAULTS, values)))
    assert errors, f"schema accepted {values}"
    assert [list(e.absolute_path) for e in errors] == [path]


# -- the example ---------------------------------------------------------------------------------------------
def test_example_is_a_valid_modeldeployment() -> None:
    from ferryman.spec import parse_deployment

    for path in sorted((CHART / "examples").glob("*.yaml")):
        md = parse_deployment(yaml.safe_load(path.read_text()), source=str(path))
        assert md.spec.traffic.candidate is not None, "the example should show a rollout"
        for version in md.spec.versions:
            assert version.uri.startswith(("http://", "https://", "s3://")), "pods cannot read a local path"


# -- contract with the operator (rendered by the real helm binary) -------------------------------------------
def _operator_env(objs: list[dict[str, Any]]) -> dict[str, Any]:
    deploy = helm.one(objs, "Deployment", "-operator")
    return helm.container_env(helm.pod_spec(deploy)["containers"][0])


def test_chart_sets_every_operator_setting_and_the_operator_accepts_them() -> None:
    from ferryman_operator import settings

    objs = helm.render(
        values={
            "operator": {"replicas": 2, "namespaces": ["models", "staging"]},
            "prometheus": {"url": "http://prometheus.monitoring:9090"},
        }
    )
    env = _operator_env(objs)
    ferryman_env = {k: v for k, v in env.items() if k.startswith("FERRYMAN_")}
    assert set(ferryman_env) == set(settings.ENV), "chart env and operator settings differ"
    plain = {k: v for k, v in ferryman_env.items() if isinstance(v, str)}
    plain["FERRYMAN_IDENTITY"] = "ferryman-operator-abc"  # from the pod name (downward API)
    assert env["FERRYMAN_IDENTITY"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    parsed = settings.from_env(plain)
    assert parsed.namespaces == ("models", "staging")
    assert parsed.leader_election is True
    assert parsed.lease_namespace == "ferryman-system"
    assert parsed.lease_name == "ferryman-operator"
    assert parsed.prometheus_url == "http://prometheus.monitoring:9090"
    assert parsed.image == "ghcr.io/ferryman-dev/ferryman:0.1.0"
    assert parsed.health_address == "0.0.0.0:8081"


def _rules(objs: list[dict[str, Any]], kind: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every rule of every object of ``kind``."""
    out: set[tuple[str, str, str]] = set()
    for role in helm.by_kind(objs, kind):
        for rule in role.get("rules", []):
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add((group, resource, verb))
    return out


OPERATOR_RBAC = [
    d for d in yaml.safe_load_all((ROOT / "operators" / "ferryman_operator" / "rbac.yaml").read_text()) if d
]


def _operator_role(kind: str) -> dict[str, Any]:
    [role] = [d for d in OPERATOR_RBAC if d["kind"] == kind]
    return role


def test_chart_clusterrole_is_the_operators_rbac() -> None:
    """With every backend on, the chart's ClusterRole has exactly the rules of the operator's rbac.yaml."""
    objs = helm.render(values={"kserve": {"enabled": True}, "ray": {"enabled": True}})
    assert helm.one(objs, "ClusterRole")["rules"] == _operator_role("ClusterRole")["rules"]
    # Namespaced mode: the same rules in a Role per namespace.
    objs = helm.render(values={"kserve": {"enabled": True}, "operator": {"namespaces": ["a", "b"]}})
    roles = [r for r in helm.by_kind(objs, "Role") if r["metadata"]["name"].endswith("-operator")]
    assert [r["metadata"]["namespace"] for r in roles] == ["a", "b"]
    assert all(r["rules"] == _operator_role("ClusterRole")["rules"] for r in roles)


def test_optional_backends_only_with_their_switch_on() -> None:
    on = _rules(helm.render(values={"kserve": {"enabled": True}, "ray": {"enabled": True}}), "ClusterRole")
    off = _rules(helm.render(values={"kserve": {"enabled": False}, "ray": {"enabled": False}}), "ClusterRole")
    removed = {(g, r) for g, r, _ in on - off}
    assert removed == {("ray.io", "rayservices"), ("serving.kserve.io", "inferenceservices")}


def test_operator_rbac_covers_exactly_the_kinds_the_operator_touches() -> None:
    """The operator's rbac.yaml (and so the chart) against the operator's registry of what its backends
    create: a permission for each of those kinds, ModelDeployments and Events, and nothing else."""
    from ferryman_operator.backends.factory import all_kinds
    from ferryman_operator.kube import client

    needed = {
        ("serving.ferryman.dev", "modeldeployments"),
        ("serving.ferryman.dev", "modeldeployments/status"),
        ("serving.ferryman.dev", "modeldeployments/finalizers"),  # owner references block deletion
        (client.EVENT.api_version.rpartition("/")[0], client.EVENT.plural),
    }
    for kind in all_kinds():
        assert kind.namespaced, kind
        needed.add((kind.api_version.rpartition("/")[0], kind.plural))
    objs = helm.render(values={"kserve": {"enabled": True}, "ray": {"enabled": True}})
    granted = {(g, r) for g, r, _ in _rules(objs, "ClusterRole")}
    assert granted == needed, f"missing: {sorted(needed - granted)}; not needed: {sorted(granted - needed)}"


def test_lease_role_is_the_operators_narrowed_to_its_own_lease() -> None:
    objs = helm.render()
    role = helm.one(objs, "Role", "-leader-election")
    assert role["metadata"]["namespace"] == "ferryman-system"
    chart = _rules(objs, "Role")
    operator = _rules([_operator_role("Role")], "Role")
    assert chart == operator, "the chart's Lease Role must grant what the operator's does"
    named = [r for r in role["rules"] if "resourceNames" in r]
    assert named == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["ferryman-operator"],
            "verbs": ["get", "update"],
        }
    ]
    assert [r["verbs"] for r in role["rules"] if "resourceNames" not in r] == [["create"]]


def test_chart_rbac_never_grants_dangerous_permissions() -> None:
    for values_file in helm.CI_VALUES:
        objs = helm.render([values_file])
        for kind in ("ClusterRole", "Role"):
            for group, resource, verb in _rules(objs, kind):
                assert "*" not in (group, resource, verb), (values_file.name, kind)
                assert resource not in {
                    "secrets",
                    "pods",
                    "pods/exec",
                    "serviceaccounts/token",
                    "nodes",
                    "clusterroles",
                    "clusterrolebindings",
                    "roles",
                    "rolebindings",
                }, (values_file.name, kind, resource)
                assert verb not in {"escalate", "bind", "impersonate", "deletecollection"}, (
                    values_file.name,
                    verb,
                )
                if resource == "namespaces":
                    assert verb in {"get", "list", "watch"}, values_file.name
