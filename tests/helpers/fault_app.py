"""A small instrumented app for the fault tests, run as a subprocess.

``python fault_app.py RUN_ID SPANS MODE``: creates SPANS spans (root + child pairs, attribute
``run.id``) through a real BatchSpanProcessor and our exporter (DSN and spool from the environment),
prints ``exporter.stats()`` as JSON, then ``exit`` (clean shutdown) or ``hang`` (wait to be killed).
"""

from __future__ import annotations

import json
import sys
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_pg_exporter import PostgresSpanExporter


def main() -> None:
    run_id, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    exporter = PostgresSpanExporter(timeout_s=1)
    provider = TracerProvider(resource=Resource.create({"service.name": "fault-app"}))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=50, max_queue_size=100_000)
    )
    tracer = provider.get_tracer("fault-app")
    for i in range(count // 2):
        with tracer.start_as_current_span(f"fault {run_id}", attributes={"run.id": run_id, "i": i}):
            with tracer.start_as_current_span("step", attributes={"run.id": run_id}):
                pass
    provider.force_flush()
    print(json.dumps(exporter.stats()), flush=True)
    if mode == "hang":
        time.sleep(3600)
    provider.shutdown()


if __name__ == "__main__":
    main()
