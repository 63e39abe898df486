"""Quote PDFs: the time to build and render a 20-year home-loan quote, and memory over many.

    .venv/bin/python bench/quote.py [--runs 200] [--quotes 1000]

- time: ``build_quote`` then ``render_quote_pdf`` for a ₹25 lakh, 20-year home loan (240
  monthly rows in the annex, 8 pages), ``--runs`` times after a warm-up; p50 and p95 of the
  wall time of each, and of the two together. Target: p50 under 150 ms.
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
from datetime import date
from pathlib import Path

from core.catalogue import load_catalogue
from core.quote import build_quote
from core.quote_pdf import render_quote_pdf

DAY = date(2026, 12, 2)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--quotes", type=int, default=1000)
    args = parser.parse_args()
    catalogue = load_catalogue()

    for _ in range(5):  # warm-up: imports, font parsing caches, the interpreter's own
        render_quote_pdf(build_quote(catalogue, "home", 2_500_000, 240, quote_date=DAY))
    builds: list[float] = []
    renders: list[float] = []
    totals: list[float] = []
    size = pages = 0
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
    print(f"20-year home-loan quote: {size:,} bytes, {pages} pages; {args.runs} runs")
    for name, values in (("build", builds), ("render", renders), ("build + render", totals)):
        print(
            f"  {name:<15} p50 {statistics.median(values):7.1f} ms   "
            f"p95 {percentile(values, 0.95):7.1f} ms"
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
