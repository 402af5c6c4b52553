"""Load tests (Locust scenarios, the latency-budget gate, the knee finder) and side-by-side benchmarks.

* ``loadtests.locustfile`` — the Locust scenarios (FastHttpUser; v1, v2 JSON, v2 binary; sticky A/B keys).
* ``loadtests.shapes`` — load shapes: steady, ramp to the knee, spike.
* ``loadtests.payloads`` — request bodies drawn from the sample dataset.
* ``loadtests.run_local`` — ``make loadtest``: start ferryman locally, gate it, find the knee, stop it.
* ``loadtests.knee`` — the knee finder (highest request rate with p99 within budget).
* ``loadtests.bench`` — ``make bench``: contenders side by side under ``wrk -t1 -c16``.
* ``loadtests.soak`` — ``make soak``: a long steady run through the same gate.
* ``loadtests.servers`` / ``loadtests.wrk`` — server subprocesses and the wrk driver they share.
"""
