"""The Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService``) in front of the same data
plane, routing, limits and observers as the REST adapter (see docs/protocol.md, "gRPC")."""
