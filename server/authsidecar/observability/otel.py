"""The OpenTelemetry SDK, set up when tracing is on (imported only then; see tracing.py).

One tracer provider of our own (the global one is left alone), a BatchSpanProcessor (spans are queued and sent
by a background thread; a full queue drops spans, never blocks a call) and the OTLP/gRPC exporter. The sampler,
resource, batch and exporter settings come from the standard ``OTEL_*`` variables; ``service.name`` defaults to
"authsidecar".

What spans may carry: names of operations, RPC names and status codes, ErrorInfo reasons, request ids, user ids,
exception class names. Never a token, password, email, cookie or exception message (a driver's message can
quote the statement's parameters): spans are made with ``record_exception=False`` and errors are described by
their class or reason only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import Attributes

__all__ = ["Tracing", "failed", "span"]

log = logging.getLogger("authsidecar.tracing")


def _resource(version: str) -> Resource:
    """OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, else service.name "authsidecar"; our version."""
    resource = Resource.create({SERVICE_VERSION: version})
    named = os.environ.get("OTEL_SERVICE_NAME", "").strip()
    if not named and str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "authsidecar"}))
    return resource


class Tracing:
    """The tracer provider, its batch processor and exporter; ``tracer`` makes this process's spans."""

    def __init__(self, endpoint: str, version: str) -> None:
        self.endpoint = endpoint
        self._provider = TracerProvider(resource=_resource(version), shutdown_on_exit=False)
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.tracer: Tracer = self._provider.get_tracer("authsidecar", version)
        service = self._provider.resource.attributes.get(SERVICE_NAME)
        sampler = self._provider.sampler.get_description()
        log.info("tracing on: OTLP/gRPC to %s (service.name %s, sampler %s)", endpoint, service, sampler)

    async def shutdown(self, within: float = 5.0) -> None:
        """Send the spans still queued and stop the exporter, waiting at most ``within`` seconds (a collector
        that does not answer must not hold the process up; what is left then is dropped)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def work() -> None:
            try:
                self._provider.shutdown()
            except Exception:
                log.exception("flushing spans failed")
            finally:
                with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                    loop.call_soon_threadsafe(settle)

        # A daemon thread, not the loop's executor: asyncio.run would wait for that one at exit.
        threading.Thread(target=work, name="otel-shutdown", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), within)
        except TimeoutError:
            log.warning("spans not sent within %.1fs of shutdown (collector %s); dropped", within, self.endpoint)


@contextmanager
def span(
    tracer: Tracer, name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None
) -> Iterator[Span]:
    """A child span of the current one, current inside the block; an exception leaving the block marks it
    failed with the exception's class only (never its message or traceback)."""
    with tracer.start_as_current_span(
        name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            failed(current, type(exc).__name__)
            raise


def failed(current: Span, kind: str) -> None:
    """Mark ``current`` failed: ``error.type`` and the status description are ``kind`` (a class name, a code, a
    reason), nothing more."""
    current.set_attribute("error.type", kind)
    current.set_status(Status(StatusCode.ERROR, kind))
