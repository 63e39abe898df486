"""Chroma's own all-MiniLM-L6-v2 ONNX embedding function, pointed at a local copy of the model."""

from __future__ import annotations

import logging
import mmap
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from chromadb.utils.embedding_functions import ONNXMiniLM_L6_V2

from core.errors import KnowledgeError

log = logging.getLogger(__name__)

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
# Query vectors kept (each 384 float32, 1.6 KiB with its array header): about 3 MiB at most.
QUERY_CACHE_SIZE = 2048
# onnxruntime threads per call. A short query split over two threads on two shared cores
# spends more CPU handing work over than it saves (measured 10-20% more CPU per query, and no
# faster once the other core is busy); ingestion's batches lose little with one thread too.
INTRA_OP_THREADS = 1
# Queries embedded together are padded to the longest of their group; a group holds at most
# this many tokens with its padding, the most one text can have (the tokenizer truncates at
# 256), so batching never grows onnxruntime's memory arena beyond what one long question does.
# (At 1,024, 32 new questions at once left the arena 32 MiB larger against 9 MiB at 256, for
# more CPU per question, not less: 8.2 ms against 6.0-6.2.)
QUERY_BATCH_TOKENS = 256


class EmbeddingUnavailable(KnowledgeError):
    """The embedding model cannot be loaded, so there is no retrieval."""


class MiniLMEmbedder(ONNXMiniLM_L6_V2):
    """The same model, tokenizer and mean pooling as Chroma's function, but each batch is padded
    to its longest text instead of always to 256 tokens: identical vectors (to float rounding),
    about eight times less work for a short query."""

    def __init__(self, preferred_providers: list[str] | None = None) -> None:
        super().__init__(preferred_providers)
        # Query vectors by normalised text, least recently used first; searches run in
        # several threads at once.
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_lock = threading.Lock()

    @cached_property
    def tokenizer(self) -> Any:
        tokenizer = self.Tokenizer.from_file(
            str(Path(self.DOWNLOAD_PATH) / self.EXTRACTED_FOLDER_NAME / "tokenizer.json")
        )
        tokenizer.enable_truncation(max_length=256)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        return tokenizer

    # The token embedding table, read row by row outside onnxruntime (see TokenRows); None
    # when the model is loaded whole.
    _tokens: TokenRows | None = None

    @cached_property
    def model(self) -> Any:
        path = Path(self.DOWNLOAD_PATH) / self.EXTRACTED_FOLDER_NAME / "model.onnx"
        try:
            # pread of one row at a time: os.preadv (not on Windows).
            graph, table = _weights_by_reference(path, token_table=hasattr(os, "preadv"))
            session = self._session(graph, path.parent)
            if table is not None:
                self._tokens = TokenRows(path, table)
            return session
        except Exception as exc:  # an unexpected file layout: load it the ordinary way
            log.info("model weights read into memory, not mapped (%s: %s)", type(exc).__name__, exc)
            self._tokens = None
            return self._session(str(path), None)

    def _run(self, ids: Any, mask: Any) -> Any:
        """The model's last hidden state for these token ids and attention mask."""
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        model = self.model  # first: loading the model is what sets _tokens
        if self._tokens is not None:
            feed[self._tokens.table.feeds] = self._tokens.lookup(ids)
        return model.run(None, feed)[0]

    def _session(self, model: bytes | str, weights_folder: Path | None) -> Any:
        options = self.ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: on shared cores spinning starves the
        # event loop and every other process, and measured slower here, not faster.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = INTRA_OP_THREADS
        options.inter_op_num_threads = 1
        if weights_folder is not None:
            options.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", str(weights_folder)
            )
        providers = [
            p for p in self.ort.get_available_providers() if p != "CoreMLExecutionProvider"
        ]
        return self.ort.InferenceSession(model, providers=providers, sess_options=options)

    def _forward(self, documents: list[str], batch_size: int = 32) -> Any:
        if len(documents) == 1:
            return self._forward_one(documents[0])
        batches = []
        for start in range(0, len(documents), batch_size):
            encoded = self.tokenizer.encode_batch(documents[start : start + batch_size])
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            hidden = self._run(ids, mask)
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            batches.append(self._normalize(pooled).astype(np.float32))
        return np.concatenate(batches)

    def _forward_one(self, text: str) -> Any:
        """One text: no padding, so no mask to pool with, and the tokenizer's single call
        (its batch call hands even one text to a thread pool)."""
        encoded = self.tokenizer.encode(text)
        ids = np.array([encoded.ids], dtype=np.int64)
        hidden = self._run(ids, np.ones_like(ids))
        return self._normalize(hidden.mean(axis=1)).astype(np.float32)

    def _forward_queries(self, texts: list[str]) -> Any:
        """Several queries in as few model calls as the token budget allows, shorter ones
        grouped together so that little is padding; rows in input order."""
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        lengths = mask.sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), 0), dtype=np.float32)
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end + 1 - start) * lengths[order[end]] <= (
                QUERY_BATCH_TOKENS
            ):
                end += 1
            rows = order[start:end]
            # The tokenizer pads on the right: the group's own padding is a prefix of it.
            width = int(lengths[rows[-1]])
            group_ids, group_mask = ids[rows, :width], mask[rows, :width]
            hidden = self._run(group_ids, group_mask)
            weights = group_mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            if out.shape[1] == 0:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[rows] = self._normalize(pooled).astype(np.float32)
            start = end
        return out

    def query_vector(self, text: str) -> list[float]:
        return list(self.query_array(text).tolist())

    def query_array(self, text: str) -> Any:
        """One query's vector (float32, read-only), remembered: customers ask the same
        questions again and again. The key is the text lower-cased with its whitespace
        collapsed, which the model's tokenizer (uncased) would make of it anyway, so a hit is
        the same vector."""
        return self.query_arrays([text])[0]

    def query_arrays(self, texts: list[str]) -> list[Any]:
        """Each query's vector as ``query_array`` gives it; those not remembered are embedded
        together (the same vectors to float rounding, for less CPU per query)."""
        keys = [_cache_key(t) for t in texts]
        found = {k: v for k in dict.fromkeys(keys) if (v := self.remembered(k)) is not None}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing:
            if len(missing) == 1:
                vectors = self._forward(missing)
            else:
                vectors = self._forward_queries(missing)
            with self._cache_lock:
                for key, vector in zip(missing, vectors, strict=True):
                    vector.flags.writeable = False
                    found[key] = self._cache[key] = vector
                while len(self._cache) > QUERY_CACHE_SIZE:
                    self._cache.popitem(last=False)
        return [found[k] for k in keys]

    def remembered(self, text: str) -> Any | None:
        """The query's vector if it is remembered, else ``None`` (cheap: no model call)."""
        key = _cache_key(text)
        with self._cache_lock:
            vector = self._cache.get(key)
            if vector is not None:
                self._cache.move_to_end(key)
        return vector

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        # Similar lengths share a batch, so padding stays small; results go back in input order.
        # Small batches: no slower on two shared cores, and onnxruntime's memory arena grows with
        # the batch (8 chunks of 235 tokens: +135 MiB that is never returned; 4: +77 MiB).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = self._forward([texts[i] for i in order], batch_size=4)
        result: list[list[float]] = [[] for _ in texts]
        for row, index in enumerate(order):
            result[index] = vectors[row].tolist()
        return result


def _cache_key(text: str) -> str:
    return " ".join(text.lower().split())


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


# -- the model's weights, mapped from its file rather than copied ------------------------------
#
# onnxruntime reads a model file whole (90 MB here), copies every weight into memory of its own
# and only then frees the file's bytes: 130 MiB resident per process, with a higher peak while
# loading. Weights stored as "external data" are memory-mapped instead. So the model is handed
# to onnxruntime as its graph with each large weight turned into a reference to where that
# weight's bytes already lie in the original model.onnx: nothing is written anywhere, the
# mapped pages are the operating system's file cache (shared by every process on the machine),
# and only pages actually read become resident. Weights onnxruntime repacks for its matrix
# kernels are released once repacked. The vectors are bit-for-bit those of the ordinary load.
#
# The token embedding table is taken out of the graph altogether: its lookup (a Gather of
# input_ids) becomes an input that Esoteric fills with the rows it reads from the file (TokenRows).
# Mapped, the table's pages stayed resident once touched, and each touch mapped the page's
# cached neighbours too (the kernel's fault-around, 64 KiB): 9 MiB of the serving process after
# 600 Telegram messages, and over 20 MiB after 900 varied questions, growing towards the whole
# 45 MiB in a long-running process. Read with pread, the rows are copied from the file cache,
# which the process does not hold.

_GRAPH = 7  # ModelProto.graph
_INITIALIZER = 5  # GraphProto.initializer (a TensorProto)
_RAW_DATA = 9  # TensorProto.raw_data
_EXTERNAL_DATA = 13  # TensorProto.external_data (key/value entries)
_DATA_LOCATION = 14  # TensorProto.data_location; 1 = EXTERNAL
_BY_REFERENCE_BYTES = 4096  # smaller weights stay inline
_NODE = 1  # GraphProto.node (a NodeProto: input 1, output 2, op_type 4)
_GRAPH_INPUT = 11  # GraphProto.input (a ValueInfoProto)
_DIMS, _DATA_TYPE, _TENSOR_NAME = 1, 2, 8  # TensorProto fields
_FLOAT = 1  # TensorProto.DataType.FLOAT


@dataclass(frozen=True)
class TokenTable:
    """Where the model file keeps its token embedding table, and the graph input its rows
    now feed."""

    offset: int
    rows: int
    width: int
    feeds: str


class TokenRows:
    """The token embedding table's rows for a batch of token ids, read from the model file with
    ``pread`` (thread-safe: no shared file position)."""

    def __init__(self, path: Path, table: TokenTable) -> None:
        self.table = table
        self._fd = os.open(path, os.O_RDONLY)
        self._finalizer = weakref.finalize(self, os.close, self._fd)

    def lookup(self, ids: Any) -> Any:
        unique, inverse = np.unique(ids, return_inverse=True)
        if unique.size and (unique[0] < 0 or unique[-1] >= self.table.rows):
            raise ValueError(f"token id outside the model's {self.table.rows} tokens")
        found = np.empty((unique.size, self.table.width), dtype="<f4")
        size = self.table.width * 4
        for row, token in zip(found, unique.tolist(), strict=True):
            read = os.preadv(self._fd, [row.data], self.table.offset + token * size)
            if read != size:
                raise OSError("the model file ended inside its token embedding table")
        return found[inverse.reshape(ids.shape)]


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(data: memoryview, start: int, end: int) -> Any:
    """(field number, wire type, payload start, payload end, whole field start) of a protobuf
    message; for length-delimited fields the payload excludes the length."""
    at = start
    while at < end:
        whole = at
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, after = _varint(data, at)
        elif wire == 1:
            after = at + 8
        elif wire == 5:
            after = at + 4
        elif wire == 2:
            length, at = _varint(data, at)
            after = at + length
        else:
            raise ValueError(f"protobuf wire type {wire} is not expected in an ONNX model")
        yield number, wire, at, after, whole
        at = after


def _delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _entry(key: str, value: str) -> bytes:
    return _delimited(_EXTERNAL_DATA, _delimited(1, key.encode()) + _delimited(2, value.encode()))


def _string(data: memoryview, start: int, end: int) -> str:
    return bytes(data[start:end]).decode()


def _lookup_of(data: memoryview, start: int, end: int) -> tuple[str, str] | None:
    """(table, output) when this NodeProto is a Gather of ``input_ids`` from a table."""
    inputs, outputs, op = [], [], ""
    for number, _, f_start, f_end, _ in _fields(data, start, end):
        if number == 1:
            inputs.append(_string(data, f_start, f_end))
        elif number == 2:
            outputs.append(_string(data, f_start, f_end))
        elif number == 4:
            op = _string(data, f_start, f_end)
    if op == "Gather" and len(inputs) == 2 and inputs[1] == "input_ids" and len(outputs) == 1:
        return inputs[0], outputs[0]
    return None


def _token_lookup(data: memoryview, start: int, end: int) -> tuple[str, str] | None:
    """(table, output) of the graph's one Gather of ``input_ids`` from an initializer."""
    found = [
        lookup
        for number, _, n_start, n_end, _ in _fields(data, start, end)
        if number == _NODE and (lookup := _lookup_of(data, n_start, n_end)) is not None
    ]
    return found[0] if len(found) == 1 else None


def _float_input(name: str, width: int) -> bytes:
    """A graph input of float32 [b, s, width] (a ValueInfoProto)."""

    def dim(payload: bytes) -> bytes:
        return _delimited(1, payload)

    dims = (
        dim(_delimited(2, b"b")) + dim(_delimited(2, b"s")) + dim(b"\x08" + _encode_varint(width))
    )
    tensor = b"\x08" + _encode_varint(_FLOAT) + _delimited(2, dims)
    return _delimited(
        _GRAPH_INPUT, _delimited(1, name.encode()) + _delimited(2, _delimited(1, tensor))
    )


def _weights_by_reference(path: Path, token_table: bool = False) -> tuple[bytes, TokenTable | None]:
    """The model at ``path`` with its large weights as external data pointing into ``path``
    itself at their own offsets. Reads only the graph's structure, a few hundred KiB.
    ``token_table``: also take the token embedding table's lookup out of the graph (see above),
    when the graph has the one lookup expected; its table is then returned."""
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        data = memoryview(mapped)
        try:
            model = bytearray()
            referenced = 0
            table: TokenTable | None = None
            for number, _, start, end, whole in _fields(data, 0, len(data)):
                if number != _GRAPH:
                    model += data[whole:end]
                    continue
                lookup = _token_lookup(data, start, end) if token_table else None
                graph = bytearray()
                for g_number, _, g_start, g_end, g_whole in _fields(data, start, end):
                    if (
                        lookup is not None
                        and g_number == _NODE
                        and _lookup_of(data, g_start, g_end) == lookup
                    ):
                        continue  # the lookup itself: its output becomes an input
                    if g_number != _INITIALIZER:
                        graph += data[g_whole:g_end]
                        continue
                    tensor = bytearray()
                    raw: tuple[int, int] | None = None
                    name, dims, dtype = "", [], 0
                    for t_number, wire, t_start, t_end, t_whole in _fields(data, g_start, g_end):
                        if t_number == _RAW_DATA and t_end - t_start >= _BY_REFERENCE_BYTES:
                            raw = (t_start, t_end)
                        else:
                            tensor += data[t_whole:t_end]
                        if t_number == _TENSOR_NAME:
                            name = _string(data, t_start, t_end)
                        elif t_number == _DATA_TYPE:
                            dtype = _varint(data, t_start)[0]
                        elif t_number == _DIMS and wire == 0:
                            dims.append(_varint(data, t_start)[0])
                        elif t_number == _DIMS:
                            at = t_start
                            while at < t_end:
                                value, at = _varint(data, at)
                                dims.append(value)
                    if lookup is not None and name == lookup[0]:
                        if raw is None or dtype != _FLOAT or len(dims) != 2:
                            raise ValueError(f"token table {name} is not a float32 matrix")
                        if dims[0] * dims[1] * 4 != raw[1] - raw[0]:
                            raise ValueError(f"token table {name} has {raw[1] - raw[0]} bytes")
                        table = TokenTable(raw[0], dims[0], dims[1], lookup[1])
                        continue
                    if raw is not None:
                        tensor += _entry("location", path.name)
                        tensor += _entry("offset", str(raw[0]))
                        tensor += _entry("length", str(raw[1] - raw[0]))
                        tensor += _encode_varint(_DATA_LOCATION << 3) + _encode_varint(1)
                        referenced += raw[1] - raw[0]
                    graph += _delimited(_INITIALIZER, bytes(tensor))
                if lookup is not None:
                    if table is None:
                        raise ValueError(f"no initializer {lookup[0]} for the token lookup")
                    graph += _float_input(table.feeds, table.width)
                model += _delimited(_GRAPH, bytes(graph))
            if referenced == 0:
                raise ValueError("no weights stored inline")
            return bytes(model), table
        finally:
            data.release()
