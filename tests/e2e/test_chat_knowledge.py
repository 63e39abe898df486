"""``printf '...' | esoteric chat`` answers from the bundled knowledge base and names the source."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import MODEL_DIR

ESOTERIC = Path(sys.executable).parent / "esoteric"
QUESTION = "what documents do I need for a home loan?"


def piped_chat(data_dir: Path, lines: str, model_dir: Path) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ESOTERIC_", "GROQ_", "TELEGRAM_", "SLACK_"))
    }
    environment.pop("DATABASE_URL", None)
    environment.update(
        {
            "ESOTERIC_DATA_DIR": str(data_dir),
            "ESOTERIC_EMBEDDING_MODEL_DIR": str(model_dir),
            "USER": "asha",
        }
    )
    command = f"printf {shlex.quote(lines)} | {shlex.quote(str(ESOTERIC))} chat"
    return subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        env=environment,
        cwd=data_dir.parent,
        timeout=300,
        check=False,
    )


def test_piped_chat_answers_from_the_knowledge_base_and_names_the_source(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = piped_chat(data, QUESTION + "\\n", MODEL_DIR)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    out = first.stdout
    assert out.startswith("From home-loan.md, Documents required:\n- Identity proof: PAN card")
    assert "Sources: home-loan.md (Home Loan > Documents required)" in out
    # The bundled knowledge base went into embedded Chroma under the data directory.
    assert (data / "chroma" / "chroma.sqlite3").is_file()

    # A second run finds the knowledge base in place and answers the same way.
    again = piped_chat(data, QUESTION + "\\nwhat is the weather on mars?\\n", MODEL_DIR)
    assert again.returncode == 0, again.stderr
    answers = again.stdout.strip().split("\n\n")
    assert answers[0].startswith("From home-loan.md, Documents required:")
    assert "don't have a reliable answer" in again.stdout and "advisor" in again.stdout


def test_piped_chat_without_the_model_says_so_once_and_still_chats(tmp_path: Path) -> None:
    result = piped_chat(tmp_path / "data", "I need a car loan\\n", tmp_path / "missing-model")
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1
    assert "running without retrieval" in warnings[0]
    assert "ESOTERIC_EMBEDDING_MODEL_DIR" in warnings[0]
    assert result.stdout.startswith("Great, a Car Loan.")
