"""Operator-facing output: structured logs (:mod:`.logs`) and OpenTelemetry traces (optional
extra ``otel``, :mod:`.tracing`)."""
