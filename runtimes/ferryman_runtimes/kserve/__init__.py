"""KServe runtime: ferryman's native server as the ``ferryman-onnx`` ClusterServingRuntime.

* :mod:`.server` — the serving-runtime contract (``--model_name``, ``--model_dir``, ``--http_port``,
  model file discovery, health) around the raw ASGI app; ``python -m ferryman_runtimes.kserve`` runs it.
* the HTTP protocol is ferryman's common one (:mod:`ferryman_runtimes.asgi.direct`, through
  ``uvicorn_options``): limits, one socket write per response, predictions answered without an ASGI task.
* :mod:`.launcher` — the ``kserve`` entry point (``ferryman.runtimes``): one version of a ModelDeployment
  spec, its model directory laid out as KServe's storage initializer does, served by :mod:`.server`.
* ``clusterservingruntime.yaml`` — the ``ferryman-onnx`` ClusterServingRuntime (the Helm chart ships a
  copy). The InferenceServices that run on it are the operator's
  (``ferryman_operator.backends.kserve.inference_service``).

Nothing here imports the ``kserve`` SDK.
"""
