"""``ray.serve._private``, fenced (see :mod:`ferryman._compat`).

The local Ray launcher (``ferryman up --runtime ray``) starts Serve and deploys the same config dict the
operator writes into a KubeRay ``RayService``: the public ``serve.run`` takes an application object, not
that config, so it uses the private ``serve_start`` and the controller client's ``deploy_apps`` (what
``serve deploy`` does). The version is checked before the private module is imported.
"""

from __future__ import annotations

import inspect
from typing import Any

from ferryman._compat import UnsupportedVersion, installed, require, require_names

DISTRIBUTION = "ray"
AT_LEAST, BELOW = "2.40", "2.61"
USES = "ray.serve._private.api.serve_start and ServeControllerClient.deploy_apps"
START_PARAMETERS = ("http_options", "proxy_location")


def check(version: str) -> str:
    """``version`` if it is in the supported range, else ``UnsupportedVersion``."""
    return require(DISTRIBUTION, version, at_least=AT_LEAST, below=BELOW, uses=USES)


def check_internals(version: str, *, api: Any, client: Any) -> None:
    require_names(api, ("serve_start",), distribution=DISTRIBUTION, version=version)
    require_names(client, ("deploy_apps",), distribution=DISTRIBUTION, version=version)
    parameters = inspect.signature(api.serve_start).parameters
    missing = [p for p in START_PARAMETERS if p not in parameters]
    if missing:
        raise UnsupportedVersion(
            f"{DISTRIBUTION} {version}: serve_start takes no {', '.join(missing)}, which "
            "ferryman passes; install a supported version (see pyproject.toml)"
        )


VERSION = check(installed(DISTRIBUTION))

from ray.serve._private import api as _api  # noqa: E402 - only once the version is known to be supported
from ray.serve._private.client import ServeControllerClient  # noqa: E402

check_internals(VERSION, api=_api, client=ServeControllerClient)


def serve_start(*, http_options: dict[str, Any], proxy_location: Any) -> ServeControllerClient:
    """Start (or connect to) Serve on the current Ray cluster; the client deploys configs
    (``deploy_apps``)."""
    return _api.serve_start(http_options=http_options, proxy_location=proxy_location)
