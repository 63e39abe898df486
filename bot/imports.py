"""Modules the libraries import eagerly but Esoteric never uses, kept out of the process.

Each costs resident memory in every process for good (measured with ``bench/memory.py``):

- chromadb imports OpenTelemetry's OTLP gRPC span exporter (gRPC, protobuf and the OTLP
  messages: about 12 MiB) only to build one when Chroma's own tracing is configured
  (``CHROMA_OTEL_GRANULARITY``), which Esoteric never does. A stand-in module takes its place;
  the real exporter is imported the moment anything asks for it, so tracing still works.
- httpx imports its command-line client (rich, click's help and Pygments: about 3 MiB) at
  import time, inside a ``try``; without it ``httpx.main`` prints that the CLI is unavailable.

Called once, first thing, by the ``esoteric`` command: it must run before chromadb and httpx
are imported, and does nothing for a module already imported."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

OTLP_EXPORTER = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
HTTPX_CLI = "httpx._main"


class _OTLPStandIn(ModuleType):
    """Stands for the OTLP exporter module until something really uses it."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            # The import system probes for __path__ and the like: not a use.
            raise AttributeError(name)
        return getattr(_real_exporter_module(), name)


def _real_exporter_module() -> ModuleType:
    if isinstance(sys.modules.get(OTLP_EXPORTER), _OTLPStandIn):
        del sys.modules[OTLP_EXPORTER]
    return importlib.import_module(OTLP_EXPORTER)


class _LazyOTLPSpanExporter:
    """Chroma names the class at import time and builds one only when tracing is on."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return _real_exporter_module().OTLPSpanExporter(*args, **kwargs)


def leave_out_unused_imports() -> None:
    if OTLP_EXPORTER not in sys.modules and "chromadb" not in sys.modules:
        stand_in = _OTLPStandIn(OTLP_EXPORTER)
        stand_in.OTLPSpanExporter = _LazyOTLPSpanExporter  # type: ignore[attr-defined]
        sys.modules[OTLP_EXPORTER] = stand_in
    if "httpx" not in sys.modules:
        # None in sys.modules makes the import fail with ImportError, which httpx expects.
        sys.modules.setdefault(HTTPX_CLI, None)  # type: ignore[arg-type]
