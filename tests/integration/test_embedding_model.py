"""The embedding model as Esoteric loads it: its weights referenced in the model file, and its
token embedding table read row by row outside onnxruntime. The vectors must be the stock load's,
and the table must not become resident memory of the process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from chromadb.utils.embedding_functions import ONNXMiniLM_L6_V2

from core.knowledge.embedding import MiniLMEmbedder, load_embedder
from tests.conftest import MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "How much is the Pro plan for a team of 7?",
    "home loan ki EMI kitni hogi 25 lakh ke liye 20 saal?",
    "होम लोन के लिए कौन से दस्तावेज़ चाहिए?",
    "Prepayment charges on a floating-rate loan, RBI rules 2024 (₹, %, 0.25)",
    "a longer text about gold loans and their interest " * 12,
]

# Embeds many different questions in a fresh interpreter, then prints how much of the model
# file is resident in that process (KiB, from /proc/self/smaps).
RESIDENT = """
import json, sys
from pathlib import Path
from core.knowledge.embedding import load_embedder
embedder = load_embedder(Path(sys.argv[1]))
words = json.loads(Path(sys.argv[2]).read_text("utf-8"))["questions"]
texts = [f"{q['q']} {n}" for n, q in enumerate(words * 3)]
for start in range(0, len(texts), 4):
    embedder.query_arrays(texts[start:start + 4])
resident, in_model = 0, False
for line in Path("/proc/self/smaps").read_text().splitlines():
    head = line.split()[0]
    if "-" in head and not head.endswith(":"):
        in_model = line.endswith("model.onnx")
    elif in_model and line.startswith("Rss:"):
        resident += int(line.split()[1])
print(json.dumps({"resident_kib": resident, "apart": embedder._tokens is not None}))
"""


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return load_embedder(MODEL_DIR)


def test_the_vectors_are_the_stock_models(embedder: MiniLMEmbedder) -> None:
    assert embedder._tokens is not None  # the table is read apart
    stock = ONNXMiniLM_L6_V2()
    stock.DOWNLOAD_PATH = str(MODEL_DIR)
    expected = np.array(stock(TEXTS))
    assert np.abs(np.array(embedder.embed(TEXTS)) - expected).max() < 1e-6
    one = np.array([embedder._forward([text])[0] for text in TEXTS])
    assert np.abs(one - expected).max() < 1e-6
    together = embedder._forward_queries(TEXTS)
    assert np.abs(together - expected).max() < 1e-6


def test_a_token_outside_the_table_is_refused(embedder: MiniLMEmbedder) -> None:
    assert embedder._tokens is not None
    rows = embedder._tokens.table.rows
    with pytest.raises(ValueError, match="outside the model's"):
        embedder._tokens.lookup(np.array([[101, rows]], dtype=np.int64))
    looked_up = embedder._tokens.lookup(np.array([[101, 7592, 101]], dtype=np.int64))
    assert looked_up.shape == (1, 3, embedder._tokens.table.width)
    assert np.array_equal(looked_up[0, 0], looked_up[0, 2])


def test_the_token_table_does_not_stay_in_memory() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            RESIDENT,
            str(MODEL_DIR),
            str(ROOT / "bench/data/retrieval_eval.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["apart"]
    # Mapped by onnxruntime, 372 questions left about 20 MiB of the table resident.
    assert figures["resident_kib"] < 2048, figures
