"""Checks on what the model wrote before a customer sees it as final.

The model is never trusted to follow its instructions: approval promises are removed and replaced
by the standard indication line, a reply that echoes the system prompt is withheld, and phone
numbers that do not belong to this conversation are redacted.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from core.numbers import parse_indian_mobile

INDICATION = (
    "This is an indication, not an approval: the final decision follows document verification "
    "and a credit assessment."
)
PROMPT_REFUSAL = (
    "I can't share my internal instructions, but I'm happy to help with your loan questions: "
    "EMIs, eligibility, documents, fees or talking to an advisor."
)

# Phrases that promise an outcome only the lender's credit process can decide.
_PROMISE = re.compile(
    r"(\b(?:you(?:'re| are| will be| would be|'ll be)|your (?:loan|application) (?:is|has been|"
    r"will be))\s+(?:definitely\s+|surely\s+|certainly\s+)?(?:pre-?)?approved\b"
    r"|\bguarantee(?:d|s)?\s+(?:an?\s+|your\s+|loan\s+)?(?:approval|sanction|loan)\b"
    r"|\b(?:approval|sanction) is (?:guaranteed|certain|assured|confirmed)\b"
    r"|\b(?:100\s?%|assured|instant|sure-?shot|certain)\s+(?:loan\s+)?approval\b"
    r"|\bwe (?:will|'ll|can) (?:definitely |surely )?(?:approve|sanction)\b"
    r"|\bno (?:chance|way) (?:of|you'?ll be) (?:rejection|rejected)\b)",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.!?\n]*[.!?]?", re.MULTILINE)
_PHONE_LIKE = re.compile(r"(?<!\d)(?:\+?91[\s-]?)?[6-9]\d{4}[\s-]?\d{5}(?!\d)")


@dataclass(frozen=True)
class Checked:
    text: str
    corrections: tuple[str, ...]


def remove_approval_promises(text: str, indicate: bool = True) -> tuple[str, bool]:
    """Drop every sentence that promises approval; add the indication line once if any was
    (unless ``indicate`` is off: a preview gets it with the final text)."""
    if not _PROMISE.search(text):
        return text, False
    kept = []
    for line in text.split("\n"):
        sentences = [s for s in _SENTENCE.findall(line) if s]
        kept.append("".join(s for s in sentences if not _PROMISE.search(s)).strip())
    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    if indicate and INDICATION not in cleaned:
        cleaned = f"{cleaned}\n\n{INDICATION}" if cleaned else INDICATION
    return cleaned, True


@functools.lru_cache(maxsize=32)
def _prompt_shingles(text: str, size: int) -> frozenset[tuple[str, ...]]:
    # The system prompt repeats across turns; split it once.
    return frozenset(_shingles(text, size))


def _shingles(text: str, size: int) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def echoes_prompt(reply: str, system_prompt: str, canary: str, size: int = 10) -> bool:
    """True when the reply carries the prompt's canary or any ``size``-word run of the prompt."""
    if canary and canary in reply:
        return True
    return not _prompt_shingles(system_prompt, size).isdisjoint(_shingles(reply, size))


def redact_foreign_phones(text: str, own: Iterable[str]) -> tuple[str, bool]:
    """Numbers the customer gave us may be repeated back; any other mobile number is not theirs
    to see (the model could only have invented it or taken it from reference text)."""
    allowed = {p for p in own if p}
    changed = False

    def _replace(match: re.Match[str]) -> str:
        nonlocal changed
        number = parse_indian_mobile(match.group(0))
        if number is None or number in allowed:
            return match.group(0)
        changed = True
        return "[number withheld]"

    return _PHONE_LIKE.sub(_replace, text), changed


def check_reply(text: str, system_prompt: str, canary: str, own_phones: Iterable[str]) -> Checked:
    corrections: list[str] = []
    if echoes_prompt(text, system_prompt, canary):
        return Checked(PROMPT_REFUSAL, ("prompt_echo",))
    text, changed = remove_approval_promises(text)
    if changed:
        corrections.append("approval_promise")
    text, changed = redact_foreign_phones(text, own_phones)
    if changed:
        corrections.append("foreign_phone")
    return Checked(text, tuple(corrections))


# Where a sentence (or a line) ends: what the hold-back releases up to.
_BOUNDARY = re.compile(r"(?:[.!?](?=\s)|\n)")


class HoldBack:
    """Streams only text that the reply checks let through.

    The model's text is held until a sentence (or a line) ends; then everything written so far
    is checked, and the part of the checked text not yet shown is released. What has been shown
    is always a prefix of checked text, so nothing a check removes (an approval promise, a phone
    number that is not the customer's) ever appears, not even for the second before the final
    edit. When a check cannot be passed by dropping or masking (the reply echoes the prompt,
    quotes an amount no tool produced), releasing stops: the customer sees the final reply,
    answered another way, and nothing more of this one."""

    def __init__(self, emit: Callable[[str], None], check: Callable[[str], str | None]) -> None:
        self._emit = emit
        self._check = check
        self._raw = ""
        self._checked_upto = 0
        self._shown = ""
        self.stopped = False

    @property
    def shown(self) -> str:
        return self._shown

    def feed(self, delta: str) -> None:
        if self.stopped:
            return
        self._raw += delta
        ends = [m.end() for m in _BOUNDARY.finditer(self._raw, self._checked_upto)]
        if not ends:
            return
        self._checked_upto = ends[-1]
        checked = self._check(self._raw[: ends[-1]])
        if checked is None:
            self.stopped = True
            return
        checked = checked.rstrip()
        if not checked.startswith(self._shown):
            # A check changed what was already shown: show nothing more of this reply.
            self.stopped = True
            return
        new = checked[len(self._shown) :]
        if new:
            self._shown = checked
            self._emit(new)
