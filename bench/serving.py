"""What the benchmarks that run ``esoteric serve`` in a subprocess share: a free port, the
embedding model's folder and the server's environment (the caller's, minus every Esoteric and
platform setting, plus the benchmark's own)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_dir() -> Path:
    """ESOTERIC_EMBEDDING_MODEL_DIR, else ../shared/models/all-MiniLM-L6-v2 beside the checkout."""
    configured = os.environ.get("ESOTERIC_EMBEDDING_MODEL_DIR")
    default = ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2"
    return Path(configured) if configured else default


def serve_env(data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a benchmarked ``esoteric serve``: nothing inherited configures it,
    logs are warnings only, and ``settings`` (environment names) come on top."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ESOTERIC_", "GROQ_", "TELEGRAM_", "SLACK_", "DATABASE_URL"))
    }
    env.update(
        ESOTERIC_DATA_DIR=str(data_dir),
        ESOTERIC_HTTP_PORT=str(port),
        ESOTERIC_LOG_LEVEL="WARNING",
    )
    env.update(settings)
    return env
