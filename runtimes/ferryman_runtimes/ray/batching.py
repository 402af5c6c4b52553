"""Adaptive batching for a version deployment: many requests, one ONNX Runtime run. Pure (numpy + ORT).

``@serve.batch`` hands the replica a list of jobs that arrived within ``batch_wait_timeout_s``. Jobs with
the same input names, dtypes and trailing dimensions (and the same requested outputs) are stacked along
the batch axis and run once; the outputs are split back by row counts. Anything that cannot be stacked
safely (a fixed batch dimension, outputs without a per-row axis, a run the model rejects) falls back to
one run per job, so one bad request never fails its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ferryman.engine import OnnxModel
from ferryman.errors import FerrymanError, InferenceFailed

Result = dict[str, np.ndarray] | FerrymanError


@dataclass(slots=True)
class Job:
    """One request's validated feed and the output names it asked for (None: all of them)."""

    feed: dict[str, np.ndarray]
    outputs: list[str] | None = None

    @property
    def rows(self) -> int:
        first = next(iter(self.feed.values()))
        return int(first.shape[0]) if first.ndim else 1


def batchable(model: OnnxModel) -> bool:
    """Inputs and outputs all carry a dynamic leading (batch) dimension."""
    sig = model.signature
    return all(t.shape and t.shape[0] is None for t in (*sig.inputs, *sig.outputs))


def _key(job: Job) -> tuple[Any, ...]:
    return (
        tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(job.feed.items())),
        tuple(job.outputs) if job.outputs else None,
    )


def run_one(model: OnnxModel, job: Job) -> Result:
    try:
        return model.run(job.feed, job.outputs)
    except FerrymanError as err:
        return err
    except Exception as err:  # never let one request take the batch (or the replica) down
        return InferenceFailed(f"inference failed: {type(err).__name__}")


def run_batch(model: OnnxModel, jobs: list[Job]) -> list[Result]:
    """Results in job order: output arrays, or the domain error that job alone raised."""
    if len(jobs) == 1 or not batchable(model) or any(a.ndim == 0 for j in jobs for a in j.feed.values()):
        return [run_one(model, j) for j in jobs]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(_key(job), []).append(i)
    results: list[Result | None] = [None] * len(jobs)
    for indices in groups.values():
        for i, r in zip(indices, _run_group(model, [jobs[i] for i in indices]), strict=True):
            results[i] = r
    return [r if r is not None else InferenceFailed("batch lost a result") for r in results]


def _run_group(model: OnnxModel, jobs: list[Job]) -> list[Result]:
    if len(jobs) == 1:
        return [run_one(model, jobs[0])]
    names = list(jobs[0].feed)
    feed = {n: np.concatenate([j.feed[n] for j in jobs], axis=0) for n in names}
    counts = [j.rows for j in jobs]
    total = sum(counts)
    try:
        out = model.run(feed, jobs[0].outputs)
    except Exception:
        return [run_one(model, j) for j in jobs]  # isolate the request the model rejects
    if any(a.ndim == 0 or a.shape[0] != total for a in out.values()):
        return [run_one(model, j) for j in jobs]  # outputs without a per-row axis cannot be split
    bounds = np.cumsum(counts)[:-1]
    pieces = {n: np.split(a, bounds, axis=0) for n, a in out.items()}
    return [{n: pieces[n][k] for n in out} for k in range(len(jobs))]
