"""OpenTelemetry traces (optional extra ``otel``): see :mod:`.tracing`."""
