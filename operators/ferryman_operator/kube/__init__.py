"""A small async Kubernetes API client (httpx) sharing kopf's credentials: what the operator reads and
writes."""
