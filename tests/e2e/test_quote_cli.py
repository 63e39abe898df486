"""``esoteric quote`` as a user runs it: the real command in a subprocess, on a machine with no
database and no data directory. The PDF it writes is read back with pypdf (the exact EMI, the
amount, the reference of the summary line); the same inputs give the same bytes; bad input is a
clear message on stderr, exit code 2 and no file."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from pypdf import PdfReader

from core.loan import emi
from core.money import format_money

# A database nobody listens on: the command must never reach for one.
NO_DATABASE = "postgresql+asyncpg://nobody:nothing@127.0.0.1:9/none"


def esoteric(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ESOTERIC_", "GROQ_", "TELEGRAM_", "SLACK_"))
    }
    environment.update(
        DATABASE_URL=NO_DATABASE,
        ESOTERIC_DATA_DIR=str(tmp_path / "data"),
        PYTHONIOENCODING="utf-8",
    )
    return subprocess.run(
        [sys.executable, "-m", "bot", "quote", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_the_command_writes_the_quote_pdf_with_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "quote.pdf"
    done = esoteric(tmp_path, "25L", "8.5", "20y", "--date", "2026-12-02", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    [summary] = done.stdout.splitlines()
    reference = summary.split(":")[0]
    assert reference.startswith("KFS-")

    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    pages = len(PdfReader(io.BytesIO(data)).pages)
    instalment = emi(2_500_000, Decimal("8.5"), 240)
    assert f"EMI {format_money(instalment, paise=True)} a month for 240 months" in summary
    assert f"{pages} pages" in summary and "APR " in summary
    text = pdf_text(data)
    apr = summary.split("APR ")[1].split("%")[0]
    figures = (
        f"Monthly instalment (EMI) {format_money(instalment, paise=True)}",
        "Loan amount ₹25,00,000",
        "Tenure 240 months (20 years)",
        "Interest rate 8.5% a year",
        f"Annual Percentage Rate (APR) {apr}% a year",
        f"Reference number {reference}",
    )
    for figure in figures:
        assert figure in text, figure
    assert "This is a quote, not a sanction" in text
    assert "Date of quote 2 December 2026" in text

    # No database, no data directory: only the catalogue was needed.
    assert not (tmp_path / "data").exists()

    # The same inputs, however written, give the same file, byte for byte.
    again = tmp_path / "again.pdf"
    args = ("25 lakh", "8.5%", "240", "--product", "home", "--date", "2026-12-02")
    repeat = esoteric(tmp_path, *args, "--out", str(again))
    assert repeat.returncode == 0, repeat.stderr
    assert repeat.stdout.split(":")[0] == reference
    assert again.read_bytes() == data


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("lots", "8.5", "20y"), "cannot read the amount"),
        (("25L", "eight", "20y"), "cannot read the rate"),
        (("25L", "8.5", "forever"), "cannot read the tenure"),
        (("25L", "8.5", "20y", "--product", "boat"), "unknown product 'boat'"),
        (("25L", "8.5", "20y", "--date", "2026-13-40"), "cannot read the date"),
        (("25L", "80", "20y"), "interest rate must be between"),
        (("500 crore", "8.5", "20y"), "amount must be between"),
    ],
)
def test_bad_input_is_refused_with_exit_code_2(
    tmp_path: Path, args: tuple[str, ...], complaint: str
) -> None:
    out = tmp_path / "quote.pdf"
    done = esoteric(tmp_path, *args, "--out", str(out))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert complaint in done.stderr and done.stderr.startswith("esoteric quote: ")
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not out.exists()


def test_the_output_file_is_required(tmp_path: Path) -> None:
    done = esoteric(tmp_path, "25L", "8.5", "20y")
    assert done.returncode == 2 and "--out" in done.stderr
