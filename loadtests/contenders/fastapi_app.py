"""FastAPI + ONNX Runtime: the usual way to put a model behind HTTP, one uvicorn worker (uvloop, httptools).

The handler reads the raw body and uses orjson (the fast idiom; pydantic request models would be slower),
so the difference to the minimal ASGI app is the framework itself: routing, request objects, middleware.
``python -m loadtests.contenders.fastapi_app --model-path M --port P``.
"""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response

from loadtests.contenders.ort_session import make_session, server_args


def build_app(model_path: str, model_name: str) -> FastAPI:
    session = make_session(model_path)
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> Response:
        try:
            tensor = orjson.loads(await request.body())["inputs"][0]
            x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
            results = session.run(output_names, {input_name: x})
        except Exception as err:
            return Response(
                orjson.dumps({"error": str(err)[:200]}), status_code=400, media_type="application/json"
            )
        outputs = [
            {
                "name": n,
                "datatype": "INT64" if r.dtype == np.int64 else "FP32",
                "shape": list(r.shape),
                "data": r.ravel(),
            }
            for n, r in zip(output_names, results, strict=True)
        ]
        return Response(
            orjson.dumps({"model_name": model_name, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY),
            media_type="application/json",
        )

    return app


def main() -> None:
    import uvicorn

    args = server_args(__doc__ or "")
    uvicorn.run(
        build_app(args.model_path, args.model_name),
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
