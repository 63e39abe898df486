"""Quote PDFs: the time to build and render a 20-year home-loan quote, and memory over many.

    .venv/bin/python bench/quote.py [--runs 200] [--quotes 1000]

- time: ``build_quote`` then ``render_quote_pdf`` for a ₹25 lakh, 20-year home loan (240
  monthly rows in the annex, 8 pages), ``--runs`` times after a warm-up; p50 and p95 of the
  wall time of each, and of the two together. Target: p50 under 150 ms.
- floor, in the same run: a bare fpdf2 document with the same quote's text, passed in as plain
  strings formatted beforehand (untimed), drawn with no Esoteric code: the same A4 page, margins,
  header and footer on every page, the same DejaVu Sans regular and bold TTFs from
  ``core/fonts`` registered with ``add_font`` for each document, the notice box, the labelled
  facts and paragraphs with ``multi_cell``, and the schedule (60 months, the later years, the
  240-month annex) with a shaded ``cell`` head repeated after each page break and each figure
  right-aligned with ``text()`` at its ``get_string_width`` (the cheapest plain way to place a
  string: a ``cell`` per figure took about a tenth longer, fpdf2's ``table()`` several times as
  long). It comes out at the same number of pages. Its runs alternate with Esoteric's; p50 and
  p95, and the ratio of Esoteric's p50 (render, and build + render) to the floor's. Machines
  differ: the ratio is the figure to compare.
- memory: the process's resident set (Linux ``VmRSS``) after a warm-up of 20 quotes, then after
  ``--quotes`` more, each for a different amount (so nothing is served from a cache), rendered
  and dropped. Target: growth under 20 MiB.

Figures are printed with whether each target is met; nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from core.catalogue import load_catalogue
from core.money import format_money
from core.quote import Quote, build_quote
from core.quote_pdf import render_quote_pdf, wording

DAY = date(2026, 12, 2)
FONTS = Path(__file__).resolve().parents[1] / "core" / "fonts"
P50_TARGET_MS = 150.0
RSS_TARGET_MIB = 20.0


def rss_mib() -> float:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


# -- the floor: plain fpdf2, plain strings -----------------------------------------------------

MARGIN = 15.0
WIDTH = 210.0 - 2 * MARGIN
COLUMNS = (24.0, 39.0, 39.0, 39.0, 39.0)


@dataclass(frozen=True)
class PlainQuote:
    """A quote's text, every string formatted beforehand: all the floor gets."""

    lender: str
    header: str
    footer: str
    title: str
    notice: str
    notice_detail: str
    # Each section: heading, (label, value) rows, paragraphs.
    sections: list[tuple[str, list[tuple[str, str]], list[str]]]
    head: tuple[str, ...]
    months: list[tuple[str, ...]]
    years: list[tuple[str, ...]]
    total: tuple[str, ...]
    annex_title: str
    annex: list[tuple[str, ...]]


def plain_quote(q: Quote) -> PlainQuote:
    """The strings Esoteric's PDF shows for ``q`` (English), made once, outside the timing."""
    t = wording("en")

    def money(amount: Decimal) -> str:
        return format_money(amount, paise=True)

    def row(first: str, *figures: Decimal) -> tuple[str, ...]:
        return (first, *(money(f) for f in figures))

    g = q.grievance
    sections = [
        (
            "",
            [
                (t["lender"], q.lender),
                (t["date"], f"{DAY.day} {DAY:%B %Y}"),
                (t["reference"], q.reference),
            ],
            [],
        ),
        (
            t["s_loan"],
            [
                (t["product"], q.product_name),
                (t["amount"], money(q.amount)),
                (
                    t["tenure"],
                    t["tenure_value"].format(
                        months=q.tenure_months, years=f"{q.tenure_months // 12} years"
                    ),
                ),
                (t["instalments"], t["instalments_value"].format(count=len(q.schedule))),
                (t["emi"], money(q.emi)),
                (t["total_interest"], money(q.total_interest)),
                (t["total_repayment"], money(q.total_repayment)),
            ],
            [],
        ),
        (
            t["s_interest"],
            [
                (t["rate"], t["rate_value"].format(rate=q.annual_rate)),
                (t["rate_type"], t[f"rate_{q.rate_type}"]),
                (t["apr"], t["apr_value"].format(apr=q.apr)),
                (t["total_cost"], money(q.total_cost)),
            ],
            [t["apr_method"].format(net=money(q.net_disbursal), monthly=q.monthly_irr, apr=q.apr)],
        ),
        (
            t["s_fees"],
            [
                (
                    t["fee"],
                    t["fee_value"].format(
                        fee=money(q.processing_fee),
                        percent=f"{q.processing_fee_percent.normalize():f}",
                        cap=money(q.processing_fee_cap),
                    ),
                ),
                (
                    t["gst"],
                    t["gst_value"].format(
                        gst=money(q.gst_on_fee), percent=f"{q.gst_percent.normalize():f}"
                    ),
                ),
                (t["total_fees"], money(q.total_fees)),
                (t["net"], money(q.net_disbursal)),
            ],
            [t["no_other_fee"]],
        ),
        (
            t["s_contingent"],
            [(t["part_prepayment"], t["nil"]), (t["foreclosure"], t["foreclosure_nil"])],
            [t["late_payment"]],
        ),
        (t["s_cooling"], [], [t["cooling"].format(days=q.look_up_days)]),
        (
            t["s_grievance"],
            [],
            [
                t["grievance_contact"].format(email=g.email, hours=g.care_hours),
                t["grievance_level1"].format(days=g.level1_days),
                t["grievance_level2"].format(days1=g.level1_days, days2=g.level2_days),
                t["grievance_level3"],
                t["grievance_ombudsman"].format(days=g.ombudsman_after_days, url=g.ombudsman_url),
            ],
        ),
        (t["s_schedule"], [], [t["schedule_split"].format(months=60)]),
    ]
    return PlainQuote(
        lender=q.lender,
        header=t["header"],
        footer=t["footer"].format(reference=q.reference, date=f"{DAY.day} {DAY:%B %Y}"),
        title=t["title"].format(product=q.product_name),
        notice=t["not_a_sanction"],
        notice_detail=t["not_a_sanction_detail"],
        sections=sections,
        head=(t["col_payment"], t["col_principal"], t["col_interest"], t["col_balance"]),
        months=[
            row(str(r.month), r.payment, r.principal, r.interest, r.balance) for r in q.monthly_rows
        ],
        years=[
            row(
                f"{y.year} ({y.first_month}–{y.last_month})",
                y.payment,
                y.principal,
                y.interest,
                y.balance,
            )
            for y in q.yearly_rows
        ],
        total=row(t["total_row"], q.total_repayment, q.amount, q.total_interest, Decimal(0)),
        annex_title=t["s_annex"],
        annex=[
            row(str(r.month), r.payment, r.principal, r.interest, r.balance) for r in q.schedule
        ],
    )


class PlainDocument(FPDF):
    def __init__(self, plain: PlainQuote) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.plain = plain
        self.head_first = ""
        self.add_font("DejaVuSans", "", str(FONTS / "DejaVuSans.ttf"))
        self.add_font("DejaVuSans", "B", str(FONTS / "DejaVuSans-Bold.ttf"))
        self.set_margins(MARGIN, 22, MARGIN)
        self.set_auto_page_break(True, margin=18)

    def header(self) -> None:
        self.set_y(10)
        self.set_font("DejaVuSans", "B", 11)
        self.cell(WIDTH / 2, 6, self.plain.lender)
        self.set_font("DejaVuSans", "", 8.5)
        self.cell(WIDTH / 2, 6, self.plain.header, align="R")
        self.line(MARGIN, 17, MARGIN + WIDTH, 17)
        self.set_y(22)

    def footer(self) -> None:
        self.set_y(-13)
        self.line(MARGIN, self.get_y() - 1, MARGIN + WIDTH, self.get_y() - 1)
        self.set_font("DejaVuSans", "", 8)
        self.cell(WIDTH / 2, 5, self.plain.footer)
        self.cell(WIDTH / 2, 5, f"Page {self.page_no()} of {{nb}}", align="R")

    def heading(self, title: str) -> None:
        if self.will_page_break(40):
            self.add_page()
        self.set_font("DejaVuSans", "B", 11.5)
        self.cell(WIDTH, 7, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.line(MARGIN, self.get_y(), MARGIN + WIDTH, self.get_y())

    def table_head(self, first: str) -> None:
        self.head_first = first
        self.set_font("DejaVuSans", "B", 8.5)
        for width, title in zip(COLUMNS, (first, *self.plain.head), strict=True):
            self.cell(width, 6, title, align="L" if title is first else "R", fill=True)
        self.ln(6)
        self.set_font("DejaVuSans", "", 8.5)

    def rows(self, rows: list[tuple[str, ...]]) -> None:
        for row in rows:
            if self.will_page_break(5):
                self.add_page()
                self.table_head(self.head_first)
            baseline = self.get_y() + 3.5
            self.text(MARGIN + self.c_margin, baseline, row[0])
            right = MARGIN + COLUMNS[0]
            for width, figure in zip(COLUMNS[1:], row[1:], strict=True):
                right += width
                self.text(right - self.c_margin - self.get_string_width(figure), baseline, figure)
            self.ln(5)


def render_plain(plain: PlainQuote) -> bytes:
    """The floor: ``plain`` drawn as an A4 PDF with fpdf2 alone."""
    pdf = PlainDocument(plain)
    pdf.set_fill_color(238, 241, 245)
    pdf.add_page()
    pdf.set_font("DejaVuSans", "B", 15)
    pdf.multi_cell(WIDTH, 8, plain.title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVuSans", "B", 11)
    pdf.cell(WIDTH, 7, plain.notice, border="LTR", fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVuSans", "", 9)
    pdf.multi_cell(
        WIDTH,
        4.8,
        plain.notice_detail,
        border="LBR",
        fill=True,
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    for title, facts, paragraphs in plain.sections:
        if title:
            pdf.heading(title)
        for label, value in facts:
            pdf.set_font("DejaVuSans", "", 9.5)
            pdf.multi_cell(72, 5.8, label, new_x=XPos.RIGHT, new_y=YPos.TOP)
            pdf.set_font("DejaVuSans", "B", 9.5)
            pdf.multi_cell(WIDTH - 72, 5.8, value, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("DejaVuSans", "", 9)
        for body in paragraphs:
            pdf.multi_cell(WIDTH, 5.2, body, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.table_head("Month")
    pdf.rows(plain.months)
    pdf.table_head("Year")
    pdf.rows(plain.years)
    pdf.set_font("DejaVuSans", "B", 8.5)
    pdf.rows([plain.total])
    pdf.add_page()
    pdf.heading(plain.annex_title)
    pdf.table_head("Month")
    pdf.rows(plain.annex)
    pdf.set_font("DejaVuSans", "B", 8.5)
    pdf.rows([plain.total])
    return bytes(pdf.output())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--quotes", type=int, default=1000)
    args = parser.parse_args()
    catalogue = load_catalogue()

    plain = plain_quote(build_quote(catalogue, "home", 2_500_000, 240, quote_date=DAY))
    for _ in range(5):  # warm-up: imports, font parsing caches, the interpreter's own
        render_quote_pdf(build_quote(catalogue, "home", 2_500_000, 240, quote_date=DAY))
        render_plain(plain)
    builds: list[float] = []
    renders: list[float] = []
    totals: list[float] = []
    floors: list[float] = []
    size = pages = floor_size = floor_pages = 0
    for _ in range(args.runs):
        start = time.perf_counter()
        quote = build_quote(catalogue, "home", 2_500_000, 240, quote_date=DAY)
        built = time.perf_counter()
        pdf = render_quote_pdf(quote)
        done = time.perf_counter()
        builds.append((built - start) * 1000)
        renders.append((done - built) * 1000)
        totals.append((done - start) * 1000)
        size, pages = len(pdf), pdf.count(b"/Type /Page\n")
        # The floor, interleaved with Esoteric's runs so both see the same machine.
        start = time.perf_counter()
        bare = render_plain(plain)
        floors.append((time.perf_counter() - start) * 1000)
        floor_size, floor_pages = len(bare), bare.count(b"/Type /Page\n")
    print(f"20-year home-loan quote: {size:,} bytes, {pages} pages; {args.runs} runs")
    print(f"floor (bare fpdf2, plain strings): {floor_size:,} bytes, {floor_pages} pages")
    for name, values in (
        ("build", builds),
        ("render", renders),
        ("build + render", totals),
        ("floor", floors),
    ):
        print(
            f"  {name:<15} p50 {statistics.median(values):7.1f} ms   "
            f"p95 {percentile(values, 0.95):7.1f} ms"
        )
    floor = statistics.median(floors)
    print(
        f"ratio to the floor, p50: render {statistics.median(renders) / floor:.2f}x, "
        f"build + render {statistics.median(totals) / floor:.2f}x"
    )
    p50 = statistics.median(totals)
    verdict = "met" if p50 < P50_TARGET_MS else "NOT met"
    print(f"target: p50 under {P50_TARGET_MS:.0f} ms: {p50:.1f} ms ({verdict})")

    for i in range(20):
        render_quote_pdf(build_quote(catalogue, "home", 2_500_000 + i, 240, quote_date=DAY))
    gc.collect()
    before = rss_mib()
    start = time.perf_counter()
    for i in range(args.quotes):
        amount = 600_000 + 997 * i
        months = 120 + i % 241
        render_quote_pdf(build_quote(catalogue, "home", amount, months, quote_date=DAY))
    elapsed = time.perf_counter() - start
    gc.collect()
    after = rss_mib()
    growth = after - before
    verdict = "met" if growth < RSS_TARGET_MIB else "NOT met"
    print(
        f"memory: RSS {before:.1f} MiB -> {after:.1f} MiB after {args.quotes:,} quotes "
        f"({elapsed:.1f} s); growth {growth:.1f} MiB; target under {RSS_TARGET_MIB:.0f} MiB "
        f"({verdict})"
    )


if __name__ == "__main__":
    main()
