"""prometheus_client's internals ferryman uses, fenced (see :mod:`ferryman._compat`).

The request observer (``ferryman.request_metrics``) counts in plain Python and publishes deltas straight
into the children: a counter child's ``_value.inc``, a histogram child's ``_upper_bounds``, ``_buckets``
and ``_sum``. Multiprocess mode (``ferryman.metrics_exposition``) swaps ``values.ValueClass`` when it
turns on after import. Everything here runs when a series is bound or published, never per request.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client import values as _values

from ferryman._compat import installed, require, require_assigned, require_names

DISTRIBUTION = "prometheus-client"
AT_LEAST, BELOW = "0.20", "0.27"
USES = "counter/histogram child internals and values.ValueClass"


def check(version: str) -> str:
    """``version`` if it is in the supported range, else ``UnsupportedVersion``."""
    return require(DISTRIBUTION, version, at_least=AT_LEAST, below=BELOW, uses=USES)


def check_internals(
    version: str, *, histogram: Any = Histogram, counter: Any = Counter, values: Any = _values
) -> None:
    """The private names exist: what a histogram and a counter child set up, and the value class."""
    require_assigned(
        histogram._metric_init,
        ("_upper_bounds", "_buckets", "_sum"),
        distribution=DISTRIBUTION,
        version=version,
    )
    require_assigned(counter._metric_init, ("_value",), distribution=DISTRIBUTION, version=version)
    require_names(values, ("ValueClass", "get_value_class"), distribution=DISTRIBUTION, version=version)
    require_names(values.ValueClass, ("inc",), distribution=DISTRIBUTION, version=version)


VERSION = check(installed(DISTRIBUTION))
check_internals(VERSION)


def fast_inc(child: Any) -> Any:
    """The bound increment of a counter/gauge child's value (skips the public wrapper's checks)."""
    return child._value.inc


def histogram_parts(child: Any) -> tuple[tuple[float, ...], list[Any], Any]:
    """A histogram child's bucket bounds (+Inf last), its bucket values and its sum value."""
    bounds = tuple(float(b) for b in child._upper_bounds)
    buckets = child._buckets
    if len(bounds) != len(buckets):
        raise RuntimeError(f"unexpected prometheus_client {VERSION} histogram internals")
    return bounds, buckets, child._sum


def multiprocess_values() -> bool:
    """Whether metric values are currently created in multiprocess (mmap) mode."""
    return bool(getattr(_values.ValueClass, "_multiprocess", False))


def reload_value_class() -> None:
    """Re-read ``PROMETHEUS_MULTIPROC_DIR``: metrics created from now on use the matching value class."""
    _values.ValueClass = _values.get_value_class()
