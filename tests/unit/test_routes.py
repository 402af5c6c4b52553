"""The routes.json document (ferryman.routes): what the operator writes into the gateway's ConfigMap."""

from __future__ import annotations

import json

import pytest

from ferryman.errors import SpecError
from ferryman.routes import (
    FORMAT,
    backends_from_dict,
    grpc_backends_from_dict,
    table_from_dict,
    table_from_json,
    table_to_dict,
    table_to_json,
)
from ferryman.routing import RouteTable
from ferryman.spec import StickyKey, StickySource


def table(**changes: object) -> RouteTable:
    base: dict[str, object] = {
        "model": "m",
        "versions": ("v1", "v2", "v3"),
        "weights": (("v1", 60), ("v2", 40)),
        "stable": "v1",
        "candidate": "v2",
        "pin_header": "x-ferryman-version",
        "salt": "m",
    }
    base.update(changes)
    return RouteTable(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "t",
    [
        table(),
        table(sticky=StickyKey(source=StickySource.cookie, name="uid")),
        table(shadow="v3", shadow_percent=12.5),
        table(weights=(("v2", 100),), stable="v2", candidate=None),
    ],
)
def test_round_trip(t: RouteTable) -> None:
    assert table_from_dict(table_to_dict(t)) == t
    assert table_from_json(table_to_json(t)) == t
    assert table_from_dict(json.loads(json.dumps(table_to_dict(t)))) == t


def test_document_shape_keeps_weight_order_for_sticky_ranges() -> None:
    doc = table_to_dict(
        table(weights=(("v2", 10), ("v1", 90))), backends={"v1": "http://a", "v2": "http://b"}
    )
    assert doc["format"] == FORMAT
    assert doc["weights"] == [{"version": "v2", "weight": 10}, {"version": "v1", "weight": 90}]
    assert doc["backends"] == {"v1": "http://a", "v2": "http://b"}
    assert backends_from_dict(doc) == {"v1": "http://a", "v2": "http://b"}
    assert table_from_dict(doc).weights == (("v2", 10), ("v1", 90))


def test_grpc_backends_are_optional_host_port_addresses() -> None:
    doc = table_to_dict(
        table(), backends={"v1": "http://a"}, grpc_backends={"v1": "a.ns.svc:8081", "v9": "x:1"}
    )
    assert doc["grpcBackends"] == {"v1": "a.ns.svc:8081"}  # only versions of the table
    assert grpc_backends_from_dict(doc) == {"v1": "a.ns.svc:8081"}
    assert table_from_dict(doc) == table()
    assert "grpcBackends" not in table_to_dict(table(), backends={"v1": "http://a"})
    assert grpc_backends_from_dict(table_to_dict(table())) == {}
    for bad in ("http://a:8081", "a", "a:0", "a:port", ":8081", 8081):
        with pytest.raises(SpecError, match="grpcBackends must map version names to host:port"):
            grpc_backends_from_dict({"grpcBackends": {"v1": bad}})


def test_equal_tables_give_identical_text() -> None:
    assert table_to_json(table()) == table_to_json(table())
    assert table_to_json(table()) != table_to_json(table(weights=(("v1", 50), ("v2", 50))))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="ferryman.routes/v0"), "format must be"),
        (lambda d: d.update(extra=1), "unknown field(s): extra"),
        (lambda d: d.pop("model"), "missing field 'model'"),
        (lambda d: d.update(weights=[{"version": "v1", "weight": 50}]), "weights must sum to 100"),
        (lambda d: d.update(weights=[{"version": "v9", "weight": 100}]), "unknown version 'v9'"),
        (
            lambda d: d.update(weights=[{"version": "v1", "weight": "100"}]),
            "weights[].weight must be an integer",
        ),
        (lambda d: d.update(sticky={"source": "ear", "name": "x"}), "'ear' is not a valid StickySource"),
        (lambda d: d.update(stable=""), "stable must be a non-empty string"),
    ],
)
def test_bad_documents_are_rejected_with_the_reason(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    doc = table_to_dict(table())
    mutate(doc)
    with pytest.raises(SpecError) as err:
        table_from_dict(doc)
    assert message in str(err.value)


def test_not_json() -> None:
    with pytest.raises(SpecError, match="not valid JSON"):
        table_from_json("{")
    with pytest.raises(SpecError, match="expected a JSON object"):
        table_from_dict([1])
