"""The replica's tracing switch, readable without importing opentelemetry (see ``tracing.py``)."""

# Set in a replica's environment when the server traces (swell serve --otlp-endpoint):
# the replica then traces its model calls, exporting to this OTLP/HTTP collector.
OTLP_ENDPOINT_ENV = "SWELL_OTLP_ENDPOINT"
