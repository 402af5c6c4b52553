"""The floor for an HTTP server: a bare ASGI callable + orjson + ONNX Runtime on uvicorn (uvloop, httptools).

No framework, no validation beyond what keeps it from crashing: read the body, take ``inputs[0]``, run the
session, write the v2 JSON response. ``python -m loadtests.contenders.minimal_asgi --model-path M --port P``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from loadtests.contenders.ort_session import make_session, server_args

_JSON = [(b"content-type", b"application/json")]


class MinimalApp:
    def __init__(self, model_path: str, model_name: str) -> None:
        self.session = make_session(model_path)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.model_name = model_name

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            return await self._send(send, 200, b'{"ready":true}')
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            tensor = orjson.loads(body)["inputs"][0]
            x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
            results = self.session.run(self.output_names, {self.input_name: x})
        except Exception as err:
            return await self._send(send, 400, orjson.dumps({"error": str(err)[:200]}))
        outputs = [
            {
                "name": n,
                "datatype": "INT64" if r.dtype == np.int64 else "FP32",
                "shape": list(r.shape),
                "data": r.ravel(),
            }
            for n, r in zip(self.output_names, results, strict=True)
        ]
        payload = orjson.dumps(
            {"model_name": self.model_name, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY
        )
        await self._send(send, 200, payload)

    @staticmethod
    async def _send(send: Any, status: int, payload: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*_JSON, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def main() -> None:
    import uvicorn

    args = server_args(__doc__ or "")
    uvicorn.run(
        MinimalApp(args.model_path, args.model_name),
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
