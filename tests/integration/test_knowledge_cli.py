"""``esoteric kb ingest | query | stats`` on the embedded default, as an operator runs them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.kb import IngestProgress
from core.knowledge.ingest import bundled_documents, bundled_source_documents
from tests.conftest import MODEL_DIR
from tests.support.knowledge_docs import docs_folder
from tests.unit.test_knowledge_documents import make_pdf


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("ESOTERIC_DATA_DIR", str(data))
    monkeypatch.setenv("ESOTERIC_EMBEDDING_MODEL_DIR", str(MODEL_DIR))
    return data


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = docs_folder(tmp_path)
    (docs / "policy.pdf").write_bytes(make_pdf(["Nominees can claim locker contents."]))
    return docs


def test_ingest_stats_and_query(
    env: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["kb", "ingest", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert "ingested gold-loan.md: 2 chunks" in out and "ingested policy.pdf: 1 chunks" in out
    # The embedded default holds the bundled documents too, as chat would have taken them in.
    bundled = sum(len(doc.chunks) for doc in bundled_source_documents(bundled_documents()))
    total = 3 + bundled
    assert f"2 file(s): 3 chunks added, 0 unchanged, 0 removed; 0 failed; {total} chunks in" in out
    assert str((env / "chroma").resolve()) in out
    assert err == ""

    assert main(["kb", "ingest", str(folder)]) == 0
    assert "0 chunks added, 3 unchanged" in capsys.readouterr().out

    assert main(["kb", "stats"]) == 0
    out = capsys.readouterr().out
    assert "esoteric-knowledge" in out and f": {total} chunks" in out
    assert "    2  gold-loan.md" in out and "    1  policy.pdf" in out
    assert "home-loan.md" in out

    assert main(["kb", "query", "which", "gold", "purity", "is", "accepted?", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1. score 0.") and "gold-loan.md > Gold Loan > Purity" in lines[0]
    assert "18 to 22 carat" in lines[1]
    assert lines[2].startswith("2. score ")


def test_a_bad_file_is_reported_and_the_rest_still_ingest(
    env: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "empty.md").write_text("", encoding="utf-8")
    (folder / "notes.docx").write_bytes(b"PK\x03\x04")
    missing = folder / "missing.md"
    code = main(["kb", "ingest", str(folder), str(folder / "notes.docx"), str(missing)])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.splitlines() == [
        f"esoteric: skipped {missing}: no such file or folder",
        f"esoteric: skipped {folder / 'empty.md'}: empty file",
        f"esoteric: skipped {(folder / 'notes.docx').resolve()}: unsupported file type '.docx'; "
        "use .md, .markdown, .txt, .text, .html, .htm, .pdf",
    ]
    assert "3 chunks added" in out and "3 failed" in out


def test_without_the_model_kb_commands_fail_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    folder: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ESOTERIC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ESOTERIC_EMBEDDING_MODEL_DIR", str(tmp_path / "nowhere"))
    assert main(["kb", "ingest", str(folder)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("esoteric: embedding model unavailable (no all-MiniLM-L6-v2 model in")
    assert "check ESOTERIC_EMBEDDING_MODEL_DIR" in err


def test_on_a_fresh_data_directory_query_searches_the_bundled_knowledge_as_chat_does(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not env.exists()
    assert main(["kb", "query", "which", "documents", "does", "a", "home", "loan", "need?"]) == 0
    lines = capsys.readouterr().out.splitlines()
    first = next(line for line in lines if line.startswith("1. score "))
    assert "home-loan.md > Home Loan > Documents required" in first


def test_query_json_gives_every_hit_whole(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kb", "query", "home loan documents", "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["question"] == "home loan documents" and result["floor"] > 0
    hits = result["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["source"] == "home-loan.md"
    assert hits[0]["heading"] == "Home Loan > Documents required"
    assert "salary slips" in hits[0]["text"].lower()  # the whole chunk, not a snippet
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert all(set(h) >= {"score", "source", "heading", "text", "chunk_id"} for h in hits)
    assert main(["kb", "ingest"]) == 1
    assert "give at least one file or folder" in capsys.readouterr().err


def test_progress_is_a_bar_on_a_terminal_and_lines_when_piped() -> None:
    tty = io.StringIO()
    bar = IngestProgress(tty, tty=True)
    bar("faq.md", 0, 4)
    bar("faq.md", 2, 4)
    bar("faq.md", 4, 4)
    assert tty.getvalue().count("\r") == 3 and "[###############---------------] 2/4 faq.md" in (
        tty.getvalue()
    )
    assert tty.getvalue().endswith("4/4 faq.md\n")
    piped = io.StringIO()
    lines = IngestProgress(piped, tty=False)
    lines("faq.md", 0, 4)
    lines("faq.md", 4, 4)
    assert piped.getvalue() == "ingested faq.md: 4 chunks\n"
