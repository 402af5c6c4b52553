"""Peer servers for the benchmark, each a script run as its own process (``python -m
loadtests.contenders.X``).

Every one serves ``POST /v2/models/{name}/infer`` (Open Inference Protocol v2, JSON tensors) with the same
ONNX Runtime session options (see :mod:`loadtests.contenders.ort_session`) and answers
``GET /v2/health/ready``, so one wrk script drives them all.
"""
