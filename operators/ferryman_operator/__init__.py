"""ferryman operator: the ModelDeployment CRD, reconcilers and backends (kopf)."""
