"""Backends: how each runtime (native, ray, kserve) realises a ModelDeployment (see ``base.Backend``)."""
