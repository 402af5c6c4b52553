"""KServe runtime: ferryman's native server as the ``ferryman-onnx`` ClusterServingRuntime.

* :mod:`.server` — the serving-runtime contract (``--model_name``, ``--model_dir``, ``--http_port``,
  model file discovery, health) around the raw ASGI app; ``python -m ferryman_runtimes.kserve`` runs it.
* the HTTP protocol is ferryman's common one (:mod:`ferryman_runtimes.asgi.direct`, through
  ``uvicorn_options``): limits, one socket write per response, predictions answered without an ASGI task.
* :mod:`.launcher` — the ``kserve`` entry point (``ferryman.runtimes``): one version of a ModelDeployment
  spec, its model directory laid out as KServe's storage initializer does, served by :mod:`.server`.
* :mod:`.manifests` — ``cluster_serving_runtime(image=...)`` and ``inference_service(md, version)``: typed
  KServe SDK objects rendered as Kubernetes manifests (for the operator and the Helm chart).
* ``clusterservingruntime.yaml`` — the generated ClusterServingRuntime, committed (kept equal by a test).

The serving path never imports the ``kserve`` SDK (it takes seconds to import); only :mod:`.manifests` does.
"""
