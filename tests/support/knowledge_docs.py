"""A small knowledge document for the ingestion tests, outside the bundled knowledge base."""

from __future__ import annotations

from pathlib import Path

GOLD_LOAN = (
    "# Gold Loan\n\n## Purity\n\nWe accept gold ornaments of 18 to 22 carat purity.\n\n"
    "## Valuation\n\nJewellery is weighed and tested at the branch in front of you.\n"
)


def docs_folder(tmp_path: Path) -> Path:
    """``tmp_path/docs`` holding ``gold-loan.md``."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "gold-loan.md").write_text(GOLD_LOAN, encoding="utf-8")
    return docs
