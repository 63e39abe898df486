"""Short extractive answers from retrieved chunks, naming where they came from."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence

from core.errors import KnowledgeError
from core.knowledge.gate import KnowledgeNotReady
from core.knowledge.types import Hit, KnowledgeSearch
from core.messages import Citation

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 700
# A second chunk joins the answer only when it is nearly as relevant and from another section.
SECOND_HIT_MARGIN = 0.03

Answer = tuple[str, tuple[Citation, ...]]

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def section_title(heading: str) -> str:
    """The last part of a heading path: "Home Loan > Documents required" -> "Documents
    required"."""
    return heading.rsplit(" > ", 1)[-1].strip()


def tables_as_lists(text: str) -> str:
    """Markdown table rows as "- first: rest" lines (chat platforms render no tables); the
    header row and its separator are dropped."""
    lines = text.split("\n")
    out: list[str] = []
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("|"):
            out.append(line)
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r":?-+:?", c) for c in cells if c):
            continue
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if re.fullmatch(r"\|?[\s:|-]+\|?", following) and "-" in following:
            continue  # the header row
        out.append(f"- {cells[0]}: {', '.join(c for c in cells[1:] if c)}")
    return "\n".join(out)


def brief(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    """Whole sentences and list items from the start of ``text``, up to about ``limit``."""
    if len(text) <= limit:
        return text.strip()
    out: list[str] = []
    size = 0
    for piece in _SENTENCE.split(text):
        piece = piece.strip()
        if not piece:
            continue
        if out and size + len(piece) + 1 > limit:
            break
        out.append(piece)
        size += len(piece) + 1
    joined = "\n".join(out) if any(p.startswith(("-", "*")) for p in out) else " ".join(out)
    return joined[:limit].rstrip() if len(joined) > limit else joined


def _one(hit: Hit, limit: int) -> str:
    title = section_title(hit.heading)
    where = f"From {hit.source}, {title}" if title else f"From {hit.source}"
    text = tables_as_lists(hit.text).strip()
    body = brief(text, limit)
    if len(body) < len(text):
        body += f"\n(More in {hit.source}.)" if "\n" in body else f" (More in {hit.source}.)"
    separator = "\n" if body.startswith(("-", "*", "|")) else " "
    return f"{where}:{separator}{body}"


def compose_answer(hits: Sequence[Hit]) -> Answer | None:
    """The best chunk, briefly, with its source named; ``None`` when there are no hits."""
    if not hits:
        return None
    best = hits[0]
    used = [best]
    for other in hits[1:2]:
        if (
            best.score - other.score <= SECOND_HIT_MARGIN
            and (other.source, other.heading) != (best.source, best.heading)
            and len(best.text) < MAX_ANSWER_CHARS // 2
        ):
            used.append(other)
    share = MAX_ANSWER_CHARS // len(used)
    text = "\n\n".join(_one(hit, share) for hit in used)
    return text, tuple(hit.citation() for hit in used)


def knowledge_lookup(
    kb: KnowledgeSearch, k: int = 4, expand: Callable[[str], str] | None = None
) -> Callable[[str], Awaitable[Answer | None]]:
    """The scripted agent's hook: an answer from the knowledge base, or ``None`` when nothing
    relevant is known (or retrieval failed, which is logged). ``expand`` rewrites the query
    first (see ``QueryExpander``). ``KnowledgeNotReady`` passes through: the agent then answers
    as without a knowledge base, rather than saying it knows nothing."""

    async def lookup(text: str) -> Answer | None:
        try:
            hits = await kb.search(expand(text) if expand else text, k)
        except KnowledgeNotReady:
            raise
        except KnowledgeError as exc:
            log.warning("knowledge lookup failed: %s", exc)
            return None
        return compose_answer(hits)

    return lookup
