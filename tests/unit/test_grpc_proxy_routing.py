"""What the cluster gateway's gRPC door hands to the routing policy (gateway.grpc_proxy.routing_inputs): the
pin by ``model_version`` or metadata, a sticky key from metadata, a cookie entry or the request's fields."""

from __future__ import annotations

import dataclasses

import numpy as np

from ferryman.routing import RouteTable, decide
from ferryman.spec import StickyKey, StickySource
from ferryman_runtimes.gateway.grpc_proxy import routing_inputs
from ferryman_runtimes.grpc import inference_pb2 as pb

TABLE = RouteTable(
    model="m", versions=("v1", "v2"), weights=(("v1", 50), ("v2", 50)), stable="v1", candidate="v2", salt="m"
)


def sticky(source: StickySource, name: str) -> RouteTable:
    return dataclasses.replace(TABLE, sticky=StickyKey(source=source, name=name))


def test_pins_by_model_version_and_by_the_pin_header_only() -> None:
    inputs = routing_inputs(TABLE, version="v2", metadata={"x-ferryman-version": "v1", "x-other": "1"})
    assert inputs.path_version == "v2" and dict(inputs.headers) == {"x-ferryman-version": "v1"}
    assert (
        decide(TABLE, inputs, draw=0.0).version == "v2"
    )  # the request's own field wins, as a REST path does
    assert (
        decide(
            TABLE, routing_inputs(TABLE, version=None, metadata={"x-ferryman-version": "v2"}), draw=0.0
        ).route
        == "pinned"
    )


def test_a_sticky_header_from_metadata_decides_like_rest() -> None:
    table = sticky(StickySource.header, "X-User-Id")
    inputs = routing_inputs(table, version=None, metadata={"x-user-id": "alice"})
    assert dict(inputs.headers) == {"x-user-id": "alice"}
    arms = {decide(table, inputs, draw=d).version for d in (0.0, 0.5, 0.99)}
    assert len(arms) == 1  # the key decides, not the draw


def test_a_sticky_cookie_from_the_cookie_entry() -> None:
    table = sticky(StickySource.cookie, "uid")
    inputs = routing_inputs(table, version=None, metadata={"cookie": "a=1; uid=bob; c=3"})
    assert dict(inputs.cookies) == {"uid": "bob"}
    assert dict(routing_inputs(table, version=None, metadata={"cookie": "a=1"}).cookies) == {}


def test_a_sticky_field_from_parameters_typed_or_raw_contents() -> None:
    table = sticky(StickySource.field, "user")
    by_param = pb.ModelInferRequest(model_name="m")
    by_param.parameters["user"].string_param = "carol"
    assert dict(routing_inputs(table, version=None, metadata={}, request=by_param).fields) == {
        "user": "carol"
    }
    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="user", datatype="INT64", shape=[1]).contents.int64_contents.append(42)
    assert dict(routing_inputs(table, version=None, metadata={}, request=typed).fields) == {"user": 42}
    raw = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\0" * 8, np.array([7], "<i8").tobytes()])
    raw.inputs.add(name="x", datatype="FP32", shape=[2])
    raw.inputs.add(name="user", datatype="INT64", shape=[1])
    assert dict(routing_inputs(table, version=None, metadata={}, request=raw).fields) == {"user": 7}
    broken = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\1\2"])
    broken.inputs.add(
        name="user", datatype="INT64", shape=[1]
    )  # a short buffer: no key (the server says why)
    assert dict(routing_inputs(table, version=None, metadata={}, request=broken).fields) == {}
