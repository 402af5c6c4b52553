"""Fences around the runtimes' third-party internals (uvicorn's protocol, Ray Serve's private API); the
mechanism and the core's fence are in :mod:`ferryman._compat`."""
