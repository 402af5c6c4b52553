"""``make bench``: ferryman side by side with its peers, same load generator, model and machine.

* ``contenders`` — the registry (raw ORT, minimal ASGI, FastAPI, stock KServe, plain Ray Serve, ferryman
  native, gateway, Ray and KServe-contract runtimes); one small class each.
* ``harness`` — runs them one at a time under ``wrk -t1 -c16`` and collects one result document.
* ``report`` — ratios and targets (pure), rich tables, JSON and ``docs/benchmarks.md``.
* ``machine`` / ``rawort`` — the machine description and the in-process ONNX Runtime limit.
"""
