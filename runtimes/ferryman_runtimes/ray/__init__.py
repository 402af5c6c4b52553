"""Ray Serve runtime: a ModelDeployment as a Ray Serve application (local Ray or KubeRay ``RayService``).

* ``ferryman.serve_config`` (in the core, so the operator can use it) — ``serve_config(md)``: the Serve
  config dict deployed here and written into KubeRay's ``serveConfigV2``; pure.
* :mod:`.app` — ``build(args)``: the ``import_path`` target that turns the config's ``args`` into the app.
* :mod:`.deployments` — the ingress (our raw ASGI gateway) and the batched per-version ONNX deployments.
* :mod:`.ingress` — the ingress ASGI app: routing policy, v1/v2, in-process or remote compute.
* :mod:`.batching` — stacking concurrent requests into one ONNX Runtime run.
* :mod:`.deploy` — ``deploy(spec, ...)``: Ray started in this process, the config deployed; ``shutdown``.
* :mod:`.launcher` — ``ferryman up --runtime ray`` (``run``; ``python -m ferryman_runtimes.ray``).
* :mod:`.local` — ``start_local(spec, port)`` / ``.stop()``: the launcher in a subprocess (benchmarks, tests).

Only :mod:`.batching`, :mod:`.local` and :mod:`.launcher`/:mod:`.deploy` (until they start Ray) avoid
importing Ray."""
