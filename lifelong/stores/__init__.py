"""Stores: the model registry and audit log, the label store and the telemetry lake."""
