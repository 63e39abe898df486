"""Chroma's own all-MiniLM-L6-v2 ONNX embedding function, pointed at a local copy of the model."""

from __future__ import annotations

import functools
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from chromadb.utils.embedding_functions import ONNXMiniLM_L6_V2

from core.errors import KnowledgeError

MODEL_FILES = (
    "config.json",
    "model.onnx",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "vocab.txt",
)


# How long to wait for the model's download site before saying there is no model.
PROBE_SECONDS = 1.5
# Query vectors kept (each 384 floats, about 12 KiB as a tuple): a few MiB at most.
QUERY_CACHE_SIZE = 2048


class EmbeddingUnavailable(KnowledgeError):
    """The embedding model cannot be loaded, so there is no retrieval."""


class MiniLMEmbedder(ONNXMiniLM_L6_V2):
    """The same model, tokenizer and mean pooling as Chroma's function, but each batch is padded
    to its longest text instead of always to 256 tokens: identical vectors (to float rounding),
    about eight times less work for a short query."""

    @cached_property
    def tokenizer(self) -> Any:
        tokenizer = self.Tokenizer.from_file(
            str(Path(self.DOWNLOAD_PATH) / self.EXTRACTED_FOLDER_NAME / "tokenizer.json")
        )
        tokenizer.enable_truncation(max_length=256)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        return tokenizer

    @cached_property
    def model(self) -> Any:
        options = self.ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: on shared cores spinning starves the
        # event loop and every other process, and measured slower here, not faster.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [
            p for p in self.ort.get_available_providers() if p != "CoreMLExecutionProvider"
        ]
        return self.ort.InferenceSession(
            str(Path(self.DOWNLOAD_PATH) / self.EXTRACTED_FOLDER_NAME / "model.onnx"),
            providers=providers,
            sess_options=options,
        )

    def _forward(self, documents: list[str], batch_size: int = 32) -> Any:
        batches = []
        for start in range(0, len(documents), batch_size):
            encoded = self.tokenizer.encode_batch(documents[start : start + batch_size])
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            hidden = self.model.run(
                None,
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            batches.append(self._normalize(pooled).astype(np.float32))
        return np.concatenate(batches)

    def query_vector(self, text: str) -> list[float]:
        """One query's vector, remembered: customers ask the same questions again and again.
        The key is the text lower-cased with its whitespace collapsed, which the model's
        tokenizer (uncased) would make of it anyway, so a hit is the same vector."""
        return list(self._remembered(" ".join(text.lower().split())))

    @functools.lru_cache(maxsize=QUERY_CACHE_SIZE)  # noqa: B019 - one embedder per process
    def _remembered(self, normalised: str) -> tuple[float, ...]:
        return tuple(self.embed([normalised])[0])

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        # Similar lengths share a batch, so padding stays small; results go back in input order.
        # Small batches measured fastest on two shared cores.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = self._forward([texts[i] for i in order], batch_size=8)
        result: list[list[float]] = [[] for _ in texts]
        for row, index in enumerate(order):
            result[index] = vectors[row].tolist()
        return result


def load_embedder(model_dir: Path | None) -> MiniLMEmbedder:
    """Load and try the model (blocking: call it off the event loop).

    ``model_dir`` is the folder holding ``onnx/``; ``None`` uses Chroma's own cache, which Chroma
    fills by downloading the model on first use."""
    embedder = MiniLMEmbedder()
    if model_dir is not None:
        folder = Path(model_dir).expanduser()
        missing = [f for f in MODEL_FILES if not (folder / "onnx" / f).is_file()]
        if missing:
            raise EmbeddingUnavailable(
                f"no all-MiniLM-L6-v2 model in {folder} (missing onnx/{missing[0]})"
            )
        embedder.DOWNLOAD_PATH = folder
    try:
        if model_dir is None:
            # Chroma's own behaviour: fetch the model into its cache on first use. Offline,
            # that download would hang for its whole timeout: ask first, briefly.
            if not _cached(embedder):
                _reachable(embedder.MODEL_DOWNLOAD_URL)
            embedder._download_model_if_not_exists()
        embedder.embed(["warm up"])
    except KnowledgeError:
        raise
    except Exception as exc:  # onnxruntime, tokenizers and the download raise assorted types
        where = embedder.DOWNLOAD_PATH
        raise EmbeddingUnavailable(
            f"cannot load the all-MiniLM-L6-v2 model from {where}: {type(exc).__name__}: {exc}"
        ) from exc
    return embedder


def _cached(embedder: MiniLMEmbedder) -> bool:
    folder = Path(embedder.DOWNLOAD_PATH) / embedder.EXTRACTED_FOLDER_NAME
    return all((folder / f).is_file() for f in MODEL_FILES)


def _reachable(url: str) -> None:
    """Raise ``EmbeddingUnavailable`` unless ``url`` answers within ``PROBE_SECONDS``."""
    try:
        httpx.head(url, timeout=PROBE_SECONDS, follow_redirects=True)
    except Exception as exc:  # no network, a firewall, DNS: all mean no model
        raise EmbeddingUnavailable(
            f"the all-MiniLM-L6-v2 model is not cached and {url} cannot be reached "
            f"({type(exc).__name__})"
        ) from exc
