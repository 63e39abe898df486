"""Realistic Telegram traffic for the benchmarks: what customers of a loan bot actually send.

A stated mix of four kinds of message:
- product questions: the 52 questions of ``bench/data/retrieval_eval.json`` (typos, paraphrases,
  Hinglish), each answered by a section of the bundled knowledge base. Each is worded afresh
  (a greeting before it, a courtesy after it) so that the query-vector cache is missed, except a
  stated share that repeats a question already asked word for word (a cache hit);
- slot answers to the bot's questions ("25 lakh", "20 years", "my salary is 1.2 lakh a month");
- greetings and thanks;
- commands (/start, /help, /reset).

Every message gets exactly one reply from each bot measured (an echo, or one Esoteric turn), so
a closed loop can wait for one reply per message.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

EVAL = Path(__file__).resolve().parent / "data" / "retrieval_eval.json"

# Shares of the mix, in this order.
MIX: tuple[tuple[str, float], ...] = (
    ("question", 0.50),
    ("slot", 0.25),
    ("greeting", 0.125),
    ("command", 0.125),
)
SLOT_ANSWERS = (
    "25 lakh",
    "20 years",
    "15 years",
    "50 lakh",
    "8 lakh",
    "5 years",
    "my salary is 1.2 lakh a month",
    "I earn 85,000 a month",
    "home loan",
    "personal loan",
    "car loan",
    "yes",
)
GREETINGS = ("hi", "hello", "good morning", "namaste", "thanks", "ok thank you")
COMMANDS = ("/start", "/help", "/reset")
# Ways customers wrap the same question; combined, several thousand wordings of each.
PREFIXES = (
    "",
    "hi, ",
    "hello ",
    "hey ",
    "quick question: ",
    "please tell me ",
    "can you tell me ",
    "sir ",
    "ok and ",
    "one more thing, ",
    "namaste, ",
    "I wanted to ask ",
)
SUFFIXES = (
    "",
    "?",
    " please",
    " thanks",
    " for me",
    " asap",
    " (asking for my father)",
    " pls reply",
    " thank you",
    " in short",
    " ??",
    " - urgent",
)


def product_questions() -> list[str]:
    data = json.loads(EVAL.read_text("utf-8"))
    # The English questions only, so the figures compare with earlier runs of this bench.
    return [str(item["q"]) for item in data["questions"] if item.get("lang", "en") == "en"]


@dataclass
class Traffic:
    """One deterministic stream of customer messages (the same seed gives every bot the same
    messages). ``repeat_share``: the share of product questions that repeat, word for word, one
    asked before in the same stream (the bot process is fresh each run, so exactly these hit
    the query-vector cache)."""

    seed: int
    repeat_share: float = 0.25
    rng: random.Random = field(init=False)
    questions: list[str] = field(init=False)
    asked: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    kinds: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.questions = product_questions()

    def question(self) -> str:
        if self.asked and self.rng.random() < self.repeat_share:
            self.kinds["question (repeat)"] += 1
            return self.rng.choice(self.asked)
        # A wording this stream has not used yet (normalised as the cache normalises it).
        while True:
            text = (
                self.rng.choice(PREFIXES)
                + self.rng.choice(self.questions)
                + self.rng.choice(SUFFIXES)
            )
            key = " ".join(text.lower().split())
            if key not in self.seen:
                self.seen.add(key)
                self.asked.append(text)
                self.kinds["question (new wording)"] += 1
                return text

    def kind(self) -> str:
        roll = self.rng.random()
        for kind, share in MIX:
            roll -= share
            if roll < 0:
                return kind
        return MIX[-1][0]

    def message(self) -> str:
        kind = self.kind()
        if kind == "question":
            return self.question()
        self.kinds[kind] += 1
        pool = {"slot": SLOT_ANSWERS, "greeting": GREETINGS, "command": COMMANDS}[kind]
        return self.rng.choice(pool)

    def waves(self, chats: int, waves: int) -> list[list[str]]:
        """``waves`` lists of one message per chat."""
        return [[self.message() for _ in range(chats)] for _ in range(waves)]

    def describe(self) -> str:
        total = sum(self.kinds.values())
        if not total:
            return "no messages"
        asked = self.kinds["question (new wording)"] + self.kinds["question (repeat)"]
        parts = [
            f"product questions {asked / total:.0%} "
            f"({self.kinds['question (repeat)'] / max(1, asked):.0%} of them repeats of one "
            "asked before, the rest worded afresh)",
            f"slot answers {self.kinds['slot'] / total:.0%}",
            f"greetings {self.kinds['greeting'] / total:.0%}",
            f"commands {self.kinds['command'] / total:.0%}",
        ]
        return f"{total} messages: " + ", ".join(parts)

    def reset_counts(self) -> None:
        self.kinds.clear()
