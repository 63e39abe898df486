"""Reading, chunking, collecting, query expansion and answer composition (no model needed)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from core.catalogue import load_catalogue
from core.knowledge.answer import compose_answer, section_title
from core.knowledge.chunking import chunk_sections, split_text
from core.knowledge.documents import DocumentError, markdown_sections, read_sections
from core.knowledge.ingest import bundled_documents, bundled_hash, collect
from core.knowledge.query import QueryExpander
from core.knowledge.types import Hit, Section


def make_pdf(lines: list[str]) -> bytes:
    """A minimal valid one-page PDF whose text pypdf can extract."""
    content = "BT /F1 12 Tf 72 720 Td " + " ".join(f"({line}) Tj 0 -16 Td" for line in lines)
    content += " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out


def blank_pdf() -> bytes:
    import io

    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


# -- reading --------------------------------------------------------------------------------------


def test_markdown_sections_follow_heading_paths_and_skip_code_fences() -> None:
    text = (
        "Intro before any heading.\n\n# Car Loan\n\n## Fees\n\nProcessing fee is 1%,\n"
        "capped at a limit.\n\n```\n# not a heading\n```\n\n### Late payment\n\nInterest on dues.\n"
        "\n## Tenure\n\nUp to 84 months.\n"
    )
    sections = markdown_sections(text)
    assert [s.heading for s in sections] == [
        "",
        "Car Loan > Fees",
        "Car Loan > Fees > Late payment",
        "Car Loan > Tenure",
    ]
    fees = sections[1].text
    assert "Processing fee is 1%, capped at a limit." in fees  # hard wrap joined
    assert "# not a heading" in fees


def test_html_sections_use_headings_and_drop_scripts(tmp_path: Path) -> None:
    page = tmp_path / "rates.html"
    page.write_text(
        "<html><head><title>x</title><script>var a = 1;</script></head><body>"
        "<h1>Gold Loan</h1><p>Overview &amp; basics.</p><h2>Rates</h2>"
        "<ul><li>9% a year</li><li>No fee</li></ul><style>p{}</style></body></html>",
        encoding="utf-8",
    )
    sections = read_sections(page)
    assert [s.heading for s in sections] == ["Gold Loan", "Gold Loan > Rates"]
    assert sections[0].text == "Overview & basics."
    assert "- 9% a year" in sections[1].text and "var a" not in sections[1].text


def test_plain_text_and_pdf_are_read(tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("Branch hours are 10 to 4.\r\n\r\n\r\nClosed on Sundays.", encoding="utf-8")
    assert read_sections(note) == [Section("", "Branch hours are 10 to 4.\n\nClosed on Sundays.")]
    pdf = tmp_path / "policy.pdf"
    pdf.write_bytes(make_pdf(["Locker rent is due every April.", "Keys are never copied."]))
    sections = read_sections(pdf)
    assert sections[0].heading == "Page 1"
    assert "Locker rent is due every April." in sections[0].text


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.md", b"  \n\n", "empty file"),
        ("image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content"),
        ("latin.txt", "caf\xe9 menu".encode("latin-1"), "not UTF-8"),
        ("notes.docx", b"PK\x03\x04 word", "unsupported file type '.docx'"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "unreadable PDF"),
        ("headings.md", b"# Only\n## Headings\n", "no text to ingest"),
    ],
)
def test_bad_files_get_one_clear_error(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DocumentError) as caught:
        read_sections(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and problem in message and "\n" not in message


def test_pdf_without_text_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(blank_pdf())
    with pytest.raises(DocumentError, match="no extractable text"):
        read_sections(path)


# -- chunking -------------------------------------------------------------------------------------


def test_long_sections_split_under_the_cap_with_overlap() -> None:
    sentences = [f"Sentence number {i} explains one more rule about the loan." for i in range(40)]
    text = " ".join(sentences)
    windows = split_text(text, max_chars=300, overlap=80)
    assert len(windows) > 5
    assert all(len(w) <= 300 for w in windows)
    for first, second in itertools.pairwise(windows):
        # The next window starts with the last sentence of the previous one.
        assert second.split("\n")[0] == first.split("\n")[-1]
    joined = "\n".join(windows)
    assert all(s in joined for s in sentences)


def test_a_single_overlong_sentence_is_still_capped() -> None:
    windows = split_text("word " * 500, max_chars=200, overlap=50)
    assert all(0 < len(w) <= 200 for w in windows)


def test_chunk_ids_hash_content_and_are_stable() -> None:
    sections = [Section("Home Loan > Fees", "Fee is small."), Section("Home Loan > Tax", "80C.")]
    first = chunk_sections("bundled", "home-loan.md", sections)
    again = chunk_sections("bundled", "home-loan.md", sections)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    changed = chunk_sections(
        "bundled", "home-loan.md", [Section("Home Loan > Fees", "Fee is larger."), sections[1]]
    )
    assert changed[0].chunk_id != first[0].chunk_id and changed[1].chunk_id == first[1].chunk_id
    other = chunk_sections("bundled", "car-loan.md", sections)
    assert {c.chunk_id for c in other}.isdisjoint(c.chunk_id for c in first)
    duplicated = chunk_sections("r", "s.md", [sections[0], sections[0]])
    assert len(duplicated) == 1
    assert first[0].embedding_text() == "Home Loan > Fees\nFee is small."


def test_every_bundled_chunk_fits_the_model_window() -> None:
    docs = bundled_documents()
    assert {name for name, _ in docs} >= {
        "home-loan.md",
        "personal-loan.md",
        "car-loan.md",
        "business-loan.md",
        "education-loan.md",
        "faq.md",
        "grievance-redress.md",
        "application-process.md",
    }
    for name, text in docs:
        chunks = chunk_sections("bundled", name, markdown_sections(text))
        assert chunks, name
        assert all(len(c.text) <= 800 for c in chunks)
    assert bundled_hash(docs) == bundled_hash(list(docs))
    assert bundled_hash(docs) != bundled_hash([*docs[:-1], (docs[-1][0], docs[-1][1] + " ")])


def test_collect_expands_folders_and_reports_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "kb" / "sub").mkdir(parents=True)
    (tmp_path / "kb" / "a.md").write_text("# A\n\ntext", encoding="utf-8")
    (tmp_path / "kb" / "sub" / "b.txt").write_text("text", encoding="utf-8")
    (tmp_path / "kb" / "logo.png").write_bytes(b"\x89PNG")
    (tmp_path / "kb" / ".hidden.md").write_text("secret", encoding="utf-8")
    single = tmp_path / "one.html"
    single.write_text("<p>x</p>", encoding="utf-8")
    got = collect([tmp_path / "kb", single, tmp_path / "missing.md"])
    assert [(f.source, f.root) for f in got.files] == [
        ("a.md", str((tmp_path / "kb").resolve())),
        ("sub/b.txt", str((tmp_path / "kb").resolve())),
        ("one.html", str(tmp_path.resolve())),
    ]
    assert got.complete_roots == {str((tmp_path / "kb").resolve()): ("a.md", "sub/b.txt")}
    assert got.errors == (f"{tmp_path / 'missing.md'}: no such file or folder",)


# -- queries and answers --------------------------------------------------------------------------


def test_query_expansion_adds_products_english_and_spelling() -> None:
    expand = QueryExpander.for_catalogue(load_catalogue()).expand
    assert "Car Loan" in expand("gaadi loan ke documents")
    assert "Personal Loan" in expand("documents for personl loan")
    assert "Business Loan" in expand("buisness loan foreclosure")
    assert "interest rate" in expand("ghar ke loan pe byaj kitna")
    assert "Home Loan" in expand("ghar ke loan pe byaj kitna")
    assert "interest" in expand("wat is the intrest")
    plain = "what happens if I miss a payment"
    assert expand(plain) == plain
    # Nothing is removed: the customer's words come first, unchanged.
    assert expand("gaadi loan ke documents").startswith("gaadi loan ke documents (")


def test_answers_name_the_source_and_stay_brief() -> None:
    long_text = "\n".join(
        f"- Item {i}: a fairly long line describing one document." for i in range(30)
    )
    hits = [
        Hit("c1", long_text, "home-loan.md", "Home Loan > Documents required", 0.71),
        Hit("c2", "Other text.", "car-loan.md", "Car Loan > Overview", 0.40),
    ]
    answer = compose_answer(hits)
    assert answer is not None
    text, citations = answer
    assert text.startswith("From home-loan.md, Documents required:\n- Item 0:")
    assert len(text) < 800 and "(More in home-loan.md.)" in text
    assert [(c.source, c.heading, c.chunk_id) for c in citations] == [
        ("home-loan.md", "Home Loan > Documents required", "c1")
    ]
    assert compose_answer([]) is None
    assert section_title("A > B > C") == "C" and section_title("") == ""


def test_two_close_short_hits_are_both_used_and_cited() -> None:
    hits = [
        Hit("a", "Foreclosure is free.", "home-loan.md", "Home Loan > Prepayment", 0.62),
        Hit("b", "No charge to prepay.", "faq.md", "FAQ > Prepaying", 0.61),
    ]
    answer = compose_answer(hits)
    assert answer is not None
    assert "From home-loan.md, Prepayment: Foreclosure is free." in answer[0]
    assert "From faq.md, Prepaying: No charge to prepay." in answer[0]
    assert [c.chunk_id for c in answer[1]] == ["a", "b"]


def test_table_answers_become_lists() -> None:
    table = (
        "| Fact | Car Loan |\n| --- | --- |\n| Interest rate | 9.25% |\n"
        "| Tenure | 12 to 84 months |"
    )
    answer = compose_answer([Hit("t", table, "car-loan.md", "Car Loan > Key facts", 0.5)])
    assert answer is not None
    assert answer[0] == (
        "From car-loan.md, Key facts:\n- Interest rate: 9.25%\n- Tenure: 12 to 84 months"
    )
