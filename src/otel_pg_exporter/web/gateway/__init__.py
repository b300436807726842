"""The OTLP/HTTP receiver (``otel-pg-gateway``, extra ``gateway``): ``otlp`` decodes request bodies
into the SDK's span and log record objects (pure), ``app`` serves them into the exporter's pipeline."""
