"""ferryman core: spec, protocols, routing policy, rollout state machine, analysis, metrics, drift, model
store."""

__version__ = "0.1.0"
