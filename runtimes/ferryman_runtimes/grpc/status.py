"""The one place domain errors become gRPC status codes (the REST adapter's ``error_answer`` counterpart).

A failure reaches the servicer either as the error itself (refused before the data plane: a bad key, a
malformed message, an unknown model, a full server) or as the HTTP answer the shared prediction path made
of it (``InferenceApp.answer`` renders every failure once, so metrics and accounting see the same code on
both transports). Both are mapped by the HTTP status the error carries, so the two cannot disagree:

======  ===========================================  ======================
HTTP    domain error                                 gRPC
======  ===========================================  ======================
400     InvalidInput (name, shape, datatype, raw)    INVALID_ARGUMENT
401     Unauthorized (missing or wrong API key)      UNAUTHENTICATED
403     Forbidden                                    PERMISSION_DENIED
404     ModelNotFound, VersionNotFound               NOT_FOUND
408     RequestTimeout                               DEADLINE_EXCEEDED
409     Conflict                                     FAILED_PRECONDITION
413     PayloadTooLarge                              RESOURCE_EXHAUSTED
503     Overloaded (in flight, batch queue full)     RESOURCE_EXHAUSTED
503     NotReady, ModelStoreError                    UNAVAILABLE
500     InferenceFailed, a bug                       INTERNAL
======  ===========================================  ======================

An over-size message never reaches the servicer: gRPC refuses it with RESOURCE_EXHAUSTED itself
(``grpc.max_receive_message_length`` is the spec's ``limits.maxBodyBytes``).
"""

from __future__ import annotations

import grpc
import orjson

from ferryman.errors import FerrymanError, Overloaded

_BY_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_code(http_status: int, *, overloaded: bool = False) -> grpc.StatusCode:
    """The gRPC code of a domain error answered with ``http_status`` (``overloaded``: retry later)."""
    if overloaded:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    code = _BY_HTTP.get(http_status)
    if code is not None:
        return code
    return grpc.StatusCode.INVALID_ARGUMENT if 400 <= http_status < 500 else grpc.StatusCode.INTERNAL


# a gRPC code as the HTTP status the metrics record (the inverse of the table above; 499: the caller left)
_TO_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.DEADLINE_EXCEEDED: 408,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.CANCELLED: 499,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status a gRPC answer is recorded under (a forwarding gateway's metrics); unknown: 500."""
    return _TO_HTTP.get(code, 500)


def for_error(err: FerrymanError) -> tuple[grpc.StatusCode, str]:
    return status_code(err.status, overloaded=isinstance(err, Overloaded)), str(err)


def for_answer(
    status: int, headers: list[tuple[bytes, bytes]], payload: bytes
) -> tuple[grpc.StatusCode, str]:
    """The code and message of a failed prediction's HTTP answer (``{"error": message}``; an overload says
    so with ``Retry-After``)."""
    overloaded = status == 503 and any(name == b"retry-after" for name, _ in headers)
    try:
        message = str(orjson.loads(payload).get("error", ""))
    except (orjson.JSONDecodeError, AttributeError):
        message = payload[:200].decode("utf-8", "replace")
    return status_code(status, overloaded=overloaded), message
