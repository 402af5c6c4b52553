"""``inference.GRPCInferenceService``'s six RPCs over the shared prediction path, for any transport.

The service is an adapter over the same :class:`~ferryman_runtimes.asgi.app.InferenceApp` (or gateway)
the REST listener serves: a ``ModelInfer`` is admitted with ``app.admit`` (readiness, unknown model or
version, the in-flight limit) and answered by ``app.answer`` (decode, route, infer or batch, encode,
record), with a protobuf decoder and encoder in place of JSON's. So the routing policy (weights, sticky A/B
key, pins by ``model_version`` or the pin header sent as metadata, shadow), adaptive batching, metrics
(``protocol="grpc"`` / ``"grpc-raw"``), accounting, drift sampling and the rollout analysis are the REST
path's, unchanged. Messages are handled as bytes, so a malformed one is ``INVALID_ARGUMENT``; ``status``
maps every domain error. API keys: the REST listener's key source (``authorization: Bearer <key>`` or
``x-api-key`` metadata); ``ServerLive`` and ``ServerReady`` stay open like ``/v2/health/*``.

:meth:`InferenceService.invoke` answers synchronously when it can (the serialized response), so a
transport can write the answer from the code that read the request, without a task; a batched version
answers with a future, finished by :meth:`InferenceService.finish`. Failures are raised
(:class:`FerrymanError`, or :class:`Answered` for an error the prediction path rendered) and turned into
a code and message by :func:`failure`. The transports: :mod:`~ferryman_runtimes.grpc.native` (ours, the
default) and :mod:`~ferryman_runtimes.grpc.server` (``grpc.aio``).
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

from ferryman.errors import FerrymanError, InvalidInput, Unauthorized
from ferryman_runtimes.asgi.app import InferenceApp, Plan
from ferryman_runtimes.asgi.http import Request
from ferryman_runtimes.asgi.security import ApiKeys, supplied_key
from ferryman_runtimes.grpc import codec
from ferryman_runtimes.grpc import inference_pb2 as pb
from ferryman_runtimes.grpc.status import for_answer, for_error
from ferryman_runtimes.later import Later

SERVICE = "inference.GRPCInferenceService"
PLATFORM = "onnxruntime_onnx"

Metadata = list[tuple[bytes, bytes]]
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
Outcome = (
    bytes | Later[Answer]
)  # the serialized response, or a batched answer (resolved when its batch has run)
Method = Callable[[bytes, Metadata], Outcome]

OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})


class Answered(Exception):
    """A prediction the shared path answered with an error (its HTTP form, mapped by ``status``)."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], payload: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.payload = payload


def failure(err: Exception) -> tuple[Any, str]:
    """The gRPC status (a ``grpc.StatusCode``) and message of a raised failure."""
    if isinstance(err, Answered):
        return for_answer(err.status, err.headers, err.payload)
    if isinstance(err, FerrymanError):
        return for_error(err)
    raise TypeError(f"not a domain failure: {err!r}")


class InferenceService:
    """The six v2 RPCs over ``app``; ``keys``: the API keys every RPC but ServerLive/ServerReady needs."""

    def __init__(self, app: InferenceApp, *, keys: ApiKeys | None = None) -> None:
        if app.async_compute:
            raise FerrymanError("gRPC serves versions computed in this process (not the Ray ingress)")
        self.app = app
        self.keys = keys
        self.refused = 0
        self.methods: dict[str, Method] = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "ModelInfer": self.model_infer,
        }

    cancellable = False  # a batched answer's future is the batch's: a dropped call leaves it alone
    failure = staticmethod(failure)

    def invoke(self, name: str, body: bytes, metadata: Metadata, *, deadline: float | None = None) -> Outcome:
        """Call the RPC ``name`` (a key of :attr:`methods`) behind the API-key check; raises its failure.
        ``deadline`` (the loop's clock) is the transport's to enforce."""
        if (
            self.keys is not None
            and name not in OPEN_METHODS
            and not self.keys.accepts(supplied_key(metadata))
        ):
            self.refused += 1
            raise Unauthorized(
                "missing or invalid API key (send metadata authorization: Bearer <key> or x-api-key: <key>)"
            )
        return self.methods[name](body, metadata)

    @staticmethod
    def finish(answer: Answer) -> bytes:
        """A batched answer's response message (raises :class:`Answered` for an error answer)."""
        status, headers, payload = answer
        if status != 200:
            raise Answered(status, headers, payload)
        return payload

    # -- health and metadata --------------------------------------------------------------------------
    def server_live(self, body: bytes, metadata: Metadata) -> bytes:
        codec.parse(pb.ServerLiveRequest, body, what="ServerLiveRequest")
        return pb.ServerLiveResponse(live=True).SerializeToString()  # type: ignore[no-any-return]

    def server_ready(self, body: bytes, metadata: Metadata) -> bytes:
        codec.parse(pb.ServerReadyRequest, body, what="ServerReadyRequest")
        return pb.ServerReadyResponse(ready=self.app.repository.ready).SerializeToString()  # type: ignore[no-any-return]

    def model_ready(self, body: bytes, metadata: Metadata) -> bytes:
        request = codec.parse(pb.ModelReadyRequest, body, what="ModelReadyRequest")
        self._model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.app.repository.ready).SerializeToString()  # type: ignore[no-any-return]

    def server_metadata(self, body: bytes, metadata: Metadata) -> bytes:
        codec.parse(pb.ServerMetadataRequest, body, what="ServerMetadataRequest")
        doc = self.app.dataplane.server_metadata()
        return pb.ServerMetadataResponse(  # type: ignore[no-any-return]
            name=doc["name"], version=doc["version"], extensions=doc["extensions"]
        ).SerializeToString()

    def model_metadata(self, body: bytes, metadata: Metadata) -> bytes:
        request = codec.parse(pb.ModelMetadataRequest, body, what="ModelMetadataRequest")
        doc = self.app.dataplane.model_metadata(self._model(request.name, request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(  # type: ignore[no-any-return]
            name=doc["name"],
            versions=doc["versions"],
            platform=doc["platform"],
            inputs=[tensor(**t) for t in doc["inputs"]],
            outputs=[tensor(**t) for t in doc["outputs"]],
        ).SerializeToString()

    def _model(self, name: str, version: str) -> Any:
        if not name:
            raise InvalidInput("name: must be set (the model's name)")
        return self.app.repository.get(name, version or None)

    # -- inference ------------------------------------------------------------------------------------
    def model_infer(self, body: bytes, metadata: Metadata) -> Outcome:
        t0 = perf_counter()
        message = codec.parse(pb.ModelInferRequest, body, what="ModelInferRequest")
        name = message.model_name
        if not name:
            raise InvalidInput("model_name: must be set")
        version = message.model_version or None
        raw = codec.uses_raw(message)
        max_elements = self.app.limits.max_elements

        def decode(_: bytes) -> Any:
            return codec.decode_request(message, max_elements=max_elements)

        def encode(response: Any, infer: Any) -> tuple[bytes, list[tuple[bytes, bytes]]]:
            return codec.encode_response(response, raw=raw), []

        plan = self.app.admit(Plan(name, version, "grpc-raw" if raw else "grpc", decode, encode))
        path = f"/v2/models/{name}/versions/{version}/infer" if version else f"/v2/models/{name}/infer"
        request = Request({"type": "grpc", "method": "gRPC ModelInfer", "path": path, "headers": metadata})
        answered = self.app.answer(plan, request, b"", t0=t0)
        if isinstance(answered, tuple):
            return self.finish(answered)
        return answered  # a batched version: answered when its batch has run
