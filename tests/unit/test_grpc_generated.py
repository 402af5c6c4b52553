"""The committed gRPC code is what ``python -m ferryman_runtimes.grpc.generate`` makes from our ``.proto``,
and that ``.proto`` is the published v2 protocol: the same package, service, messages and field numbers as
KServe's ``grpc_predict_v2.proto`` (the descriptor the kserve package ships), so standard clients work."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from ferryman_runtimes.grpc import generate
from ferryman_runtimes.grpc import inference_pb2 as pb


def test_committed_code_matches_a_fresh_generation() -> None:
    fresh = generate.generate()
    assert set(fresh) == set(generate.OUTPUTS)
    for name, text in fresh.items():
        committed = (generate.PACKAGE_DIR / name).read_text()
        assert committed == text, f"{name} is stale: run .venv/bin/python -m ferryman_runtimes.grpc.generate"


def test_generated_module_uses_a_private_descriptor_pool() -> None:
    from google.protobuf import descriptor_pool

    assert pb.DESCRIPTOR.pool is not descriptor_pool.Default()
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindFileByName(pb.DESCRIPTOR.name)


def _serialized_descriptor(module_file: Path) -> bytes:
    """The FileDescriptorProto a generated ``*_pb2.py`` adds to its pool (read from the source, not imported:
    KServe's and tritonclient's modules register the same names in the default pool)."""
    for node in ast.walk(ast.parse(module_file.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            value = ast.literal_eval(node.args[0])
            assert isinstance(value, bytes)
            return value
    raise AssertionError(f"no AddSerializedFile in {module_file}")


def _shape(fd: descriptor_pb2.FileDescriptorProto) -> dict[str, object]:
    def fields(m: descriptor_pb2.DescriptorProto, prefix: str) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in m.field:
            out[f"{prefix}{m.name}.{f.name}"] = (
                f.number,
                f.type,
                f.label,
                f.type_name.rsplit(".", 1)[-1],
                f.HasField("oneof_index"),
            )
        for nested in m.nested_type:
            out.update(fields(nested, f"{prefix}{m.name}."))
        return out

    shape: dict[str, object] = {"package": fd.package}
    for m in fd.message_type:
        shape.update(fields(m, ""))
    for s in fd.service:
        for method in s.method:
            shape[f"{s.name}/{method.name}"] = (
                method.input_type,
                method.output_type,
                method.client_streaming,
                method.server_streaming,
            )
    return shape


def test_same_messages_and_field_numbers_as_kserves_proto() -> None:
    spec = importlib.util.find_spec("kserve")
    assert spec is not None and spec.origin is not None, "the kserve package is in the lock"
    kserve_pb2 = Path(spec.origin).parent / "protocol" / "grpc" / "grpc_predict_v2_pb2.py"
    theirs = descriptor_pb2.FileDescriptorProto.FromString(_serialized_descriptor(kserve_pb2))
    ours = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(ours)
    mine, kserve = _shape(ours), _shape(theirs)
    assert {k: kserve.get(k) for k in mine} == mine
    # the kserve package also ships the model-repository extension (load/unload), which the published
    # protocol (docs/predict-api/v2/grpc_predict_v2.proto) does not define and ferryman does not serve
    assert all("Repository" in k for k in set(kserve) - set(mine)), sorted(set(kserve) - set(mine))
    assert ours.package == "inference"
    assert [s.name for s in ours.service] == ["GRPCInferenceService"]


def test_tritons_service_carries_our_fields_under_the_same_numbers() -> None:
    """tritonclient.grpc's service.proto is a superset of the v2 protocol (more RPCs and parameter kinds)."""
    spec = importlib.util.find_spec("tritonclient")
    assert spec is not None and spec.origin is not None
    theirs = descriptor_pb2.FileDescriptorProto.FromString(
        _serialized_descriptor(Path(spec.origin).parent / "grpc" / "service_pb2.py")
    )
    ours = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(ours)
    triton = _shape(theirs)
    for key, value in _shape(ours).items():
        assert triton.get(key) == value, key
