"""Reusable test helpers (import them as ``tests.helpers.<module>``).

* ``tests.helpers.ports`` — ``free_port()`` for subprocess servers (``free_port_below_ephemeral(count=n)`` for
  one that binds late, a local Ray), ``bound_socket()`` for in-process ones. Starting, waiting for and
  stopping processes: ``ferryman.processes`` (``start``, ``wait_http``, ``stop``, ``stop_pid``).
* ``tests.helpers.polling`` — ``wait_for(fn, timeout=..., what=...)``: poll until ``fn()`` is truthy.
* ``tests.helpers.servers`` — ``serve_cli(target, args=...)`` runs ``ferryman serve`` in a subprocess and
  waits for ``/v2/health/ready``; ``serve_app(asgi_app)`` runs any ASGI app under uvicorn in a thread;
  ``run_ferryman(args)`` runs a CLI command to completion; ``wait_http(url)`` polls a URL.
* ``tests.helpers.prometheus`` — ``prometheus(targets)`` runs a real Prometheus on loopback scraping every
  second (query/wait_for/label_values helpers); ``parse_exposition(text)`` reads a ``/metrics`` body.
* ``tests.helpers.models`` — tiny ONNX models built with ``onnx.helper`` (fixed dims, two inputs,
  strings, arbitrary opset) and ``reference_outputs(path, feed)`` (plain onnxruntime, the ground truth).
* ``tests.helpers.security`` — a test CA and 127.0.0.1 certificates (``make_ca``, ``issue_cert``,
  ``served_fingerprint``), key files and Kubernetes-Secret-shaped dirs (``write_atomically``, ``secret_dir``,
  ``rotate_secret``), ``ferryman_process(args, port=..., scheme="https")`` for any ``ferryman`` command, and
  ``raw_exchange`` to trickle bytes on a raw socket.
* ``tests.helpers.upstream_crds`` — the upstream CRDs (KServe, KubeRay, Prometheus Operator, Gateway API)
  that ``scripts/cluster/crds.sh`` fetches from their Go modules (``directory()``, ``crd(file)``,
  ``schema(file, version)``) and ``problems(obj, file, version)``: what the apiserver would refuse with strict
  field validation (schema errors and fields structural pruning would drop).

Shared fixtures live in ``tests/conftest.py``: ``sample_models`` (session-scoped
``ferryman.examples.export`` result), ``sample_spec``, ``traffic`` (held-out rows), ``native_server``
(session-scoped ``ferryman serve deployment.yaml``) and ``tiny_models``.
"""
