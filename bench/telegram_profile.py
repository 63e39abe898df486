"""Where the Esoteric bot process's CPU goes under the Telegram benchmark.

py-spy samples every thread of the process during the measured waves, and each sample is
charged to one component by the innermost frame that names one. Samples of a thread waiting
(its innermost line a queue get, a wait, a select) are dropped: py-spy's own idle detection lets
many through here. Each thread's CPU time over the same window (from /proc) is then shared out
by its samples, so the figures add up to the process's CPU; threads with no Python frames
(onnxruntime's and Chroma's own pools) are shown by their names.

    python bench/telegram.py --rounds 1 --burst-updates 0 --py-spy /tmp/spy   # record + print
    python bench/telegram_profile.py /tmp/spy/llm-r1.txt [--top 25]           # read one again

py-spy pauses the process to read its stacks, so a profiled run's CPU figures run high; the
shares are what it is for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import linecache
import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path

VENV_BIN = Path(sys.executable).parent

# (component, pattern on a frame's file) in the order they are tried on each frame, innermost
# frame first: the first frame matching any pattern names the sample's component. Libraries
# used on behalf of several (json, pydantic, httpx, aiohttp) have no pattern of their own, so
# they are charged to whoever called them.
# Project files are matched by their path inside the project (wherever it is checked out),
# libraries by their path under site-packages or the standard library.
P = r"^(?!.*site-packages)(?!.*/lib/python3).*/"
LIB = r"site-packages/"
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("logging", rf"/logging/|{P}bot/logging\.py|{P}core/logcontext\.py"),
    ("pacing (send budget)", rf"{P}core/sendbudget\.py"),
    ("rendering (Telegram HTML, splitting)", rf"{P}adapters/telegram/render\.py"),
    (
        "embedding (tokenizer + ONNX)",
        rf"{P}core/knowledge/embedding\.py|{LIB}onnxruntime|{LIB}tokenizers",
    ),
    ("Chroma (query, HNSW, its SQLite)", rf"{LIB}chromadb/"),
    (
        "SQL (SQLAlchemy, aiosqlite, sqlite3, stores)",
        rf"{LIB}sqlalchemy|{LIB}aiosqlite|/sqlite3/|{P}core/store/",
    ),
    ("groq SDK (requests, SSE parsing)", rf"{LIB}groq/"),
    ("python-telegram-bot (+ its httpx)", rf"{LIB}telegram/"),
    ("agent (LLM/scripted, prompt, safety)", rf"{P}core/agent/"),
    ("knowledge (expansion, answer)", rf"{P}core/knowledge/"),
    ("our Telegram adapter", rf"{P}adapters/telegram/"),
    ("core turn (service, engine, handlers, outbox)", rf"{P}core/"),
    ("HTTP server (uvicorn, FastAPI)", rf"{LIB}(uvicorn|fastapi|starlette)"),
    ("bot wiring (runtime, settings)", rf"{P}bot/(?!cli\.py|__main__\.py)"),
)
_COMPILED = tuple((name, re.compile(pattern)) for name, pattern in COMPONENTS)
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \((?:0x)?(?P<tid>[0-9a-fA-F]+)\)")
_WAITING = re.compile(r"\.(get|wait|select|poll|acquire|join)\(|time\.sleep\(")
OTHER = "event loop (uvloop, asyncio), threads, other"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def thread_times(pid: int) -> dict[int, tuple[str, float]]:
    """Each live thread's name and CPU seconds (user + system)."""
    times: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        times[int(task.name)] = (comm, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return times


# Where threads wait for work: the standard library's thread pools, queues and locks, and
# aiosqlite's connection thread.
_WAIT_FILES = re.compile(
    r"/(concurrent/futures/thread|threading|queue|selectors|aiosqlite/core)\.py$"
)


def _waiting(frame: str) -> bool:
    match = _FRAME.match(frame)
    if not match or not match.group("line") or not _WAIT_FILES.search(match.group("file")):
        return False
    line = linecache.getline(match.group("file"), int(match.group("line")))
    return bool(_WAITING.search(line))


def component_of(frames: list[str]) -> str:
    """``frames`` outermost first, as py-spy's raw format writes them."""
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        where = match.group("file") if match else frame
        for name, pattern in _COMPILED:
            if pattern.search(where):
                return name
    return OTHER


def read_raw(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def breakdown(path: Path) -> tuple[int, list[tuple[str, float]]]:
    """Samples kept, and each component's CPU seconds, largest first. With the thread times
    recorded beside the samples (``<path>.threads.json``), each thread's CPU is shared out by its
    own samples; without them, samples stand for equal CPU."""
    per_thread: dict[int, Counter[str]] = {}
    kept = 0
    for stack, count in read_raw(path).items():
        head = _THREAD.match(stack[0])
        frames = list(stack[1:] if head else stack)
        if not frames or _waiting(frames[-1]):
            continue
        tid = int(head.group("tid"), 16 if stack[0].startswith("thread (0x") else 10) if head else 0
        per_thread.setdefault(tid, Counter())[component_of(frames)] += count
        kept += count
    seconds: Counter[str] = Counter()
    times_file = path.with_suffix(".threads.json")
    if not times_file.exists():
        for counts in per_thread.values():
            seconds.update(counts)
        return kept, seconds.most_common()
    times = {
        int(tid): (comm, cpu) for tid, (comm, cpu) in json.loads(times_file.read_text()).items()
    }
    for tid, (comm, cpu) in times.items():
        counts = per_thread.get(tid)
        if not counts:
            seconds[f"threads without Python frames ({comm})"] += cpu
            continue
        total = sum(counts.values())
        for name, n in counts.items():
            seconds[name] += cpu * n / total
    return kept, seconds.most_common()


def top_functions(path: Path, top: int) -> list[tuple[str, float]]:
    """Innermost project or library functions by their share of samples ("self" time)."""
    leaves: Counter[str] = Counter()
    stacks = read_raw(path)
    for stack, count in stacks.items():
        leaves[stack[-1]] += count
    total = sum(leaves.values())
    return [(frame, n / total) for frame, n in leaves.most_common(top)] if total else []


def inclusive(path: Path, patterns: list[str]) -> list[tuple[str, float]]:
    """The share of samples with a frame matching each pattern anywhere on the stack."""
    stacks = read_raw(path)
    total = sum(stacks.values())
    out = []
    for pattern in patterns:
        compiled = re.compile(pattern)
        n = sum(c for stack, c in stacks.items() if any(compiled.search(f) for f in stack))
        out.append((pattern, n / total if total else 0.0))
    return out


class PySpy:
    """``py-spy record`` of one process, raw (collapsed stacks) format, until stopped; the CPU
    of each of its threads over the same span goes beside it (``.threads.json``)."""

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.process: asyncio.subprocess.Process | None = None
        self.before: dict[int, tuple[str, float]] = {}

    async def start(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            str(VENV_BIN / "py-spy"), "record", "--format", "raw", "--threads", "--full-filenames",
            "--rate", str(self.rate), "-o", str(self.out), "-p", str(self.pid),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(0.5)  # attached
        self.before = thread_times(self.pid)

    async def stop(self) -> None:
        after = thread_times(self.pid)
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            await self.process.wait()
        spent = {
            tid: (comm, cpu - self.before.get(tid, (comm, 0.0))[1])
            for tid, (comm, cpu) in after.items()
        }
        self.out.with_suffix(".threads.json").write_text(json.dumps(spent))


def report(path: Path, cpu_ms: float | None = None, top: int = 0) -> list[str]:
    samples, parts = breakdown(path)
    whole = sum(value for _, value in parts) or 1.0
    lines = [f"{path.name}: {samples} samples kept (all threads, waits dropped)"]
    for name, value in parts:
        ms = f"  ~{value / whole * cpu_ms:5.2f} ms/update" if cpu_ms else ""
        lines.append(f"  {name:<52} {value / whole:6.1%}{ms}")
    if top:
        lines.append("  innermost frames:")
        for frame, share in top_functions(path, top):
            lines.append(f"    {share:6.1%}  {frame}")
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("raw", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=0)
    parser.add_argument("--cpu-ms", type=float, help="CPU ms per update, to scale the shares")
    parser.add_argument("--inclusive", nargs="*", default=[], help="regexes: share on stack")
    args = parser.parse_args()
    for raw in args.raw:
        print("\n".join(report(raw, args.cpu_ms, args.top)))
        for pattern, share in inclusive(raw, args.inclusive):
            print(f"  anywhere on the stack: {pattern:<40} {share:6.1%}")
