"""The LLM agent on Groq: streamed replies, tool calls, grounded answers, graceful failure.

One turn: retrieve reference chunks, build the prompt, then up to a few model rounds, each either
text (streamed to the channel as it arrives) or tool calls answered by ``ToolSession``. The whole
turn runs under one deadline. Rate limits and server errors are retried with backoff, honouring
``retry-after`` only when the wait fits the deadline; anything else that goes wrong (timeouts, a
broken or truncated stream, a malformed tool call, a rejected key) makes the scripted agent answer
the same turn from the same conversation state. A circuit breaker stops calling the API for a
while after repeated failed turns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import groq
import httpx

from core.agent import prompt
from core.agent.base import AgentResult, TurnContext
from core.agent.breaker import CircuitBreaker
from core.agent.safety import (
    HoldBack,
    check_reply,
    echoes_prompt,
    redact_foreign_phones,
    remove_approval_promises,
)
from core.agent.scripted import ScriptedAgent
from core.agent.tools import References, ToolSession
from core.catalogue import Catalogue
from core.errors import AgentError, KnowledgeError
from core.i18n import in_script
from core.knowledge.gate import KnowledgeNotReady
from core.knowledge.query import needs_retrieval
from core.knowledge.types import KnowledgeSearch
from core.messages import Citation, Reply
from core.numbers import parse_indian_mobile

log = logging.getLogger(__name__)

_CITE = re.compile(r"\s?\[(R\d+)(?:\s*,\s*(R\d+))*\]")
_CITE_IDS = re.compile(r"R\d+")
COMPLETIONS_PATH = "/openai/v1/chat/completions"
_MONEY = re.compile(r"₹\s?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class LLMConfig:
    model: str
    turn_deadline_seconds: float = 20.0
    # Part of the deadline kept back so the scripted agent can still answer in time.
    fallback_reserve_seconds: float = 1.0
    max_retries: int = 2
    retry_backoff_seconds: float = 0.5
    max_tool_rounds: int = 4
    history_tokens: int = 1500
    max_completion_tokens: int = 700
    temperature: float = 0.3
    knowledge_k: int = 4
    currency: str | None = None
    max_emi_to_income: Decimal | None = None
    # A model whose last ``whole_after`` requests each finished within ``whole_below_seconds``
    # is asked for whole replies instead of a stream (see ``ModelPace``); 0 streams always.
    whole_below_seconds: float = 0.3
    whole_after: int = 8


class ModelPace:
    """Whether the model answers so fast that streaming buys the customer nothing.

    Channels hold a streamed reply's first message back for a moment (Telegram 0.3 s) so that
    a fast reply goes out once, whole. A model that finishes within that moment is better asked
    for the whole reply at once: no stream of a frame per word to decode, no preview to keep,
    the same reply. Each request's duration is noted, streamed or not; one slower than the bound
    turns streaming back on at once, and it stays on until enough fast requests in a row."""

    def __init__(self, below_seconds: float, after: int) -> None:
        self.below_seconds = below_seconds
        self.after = after
        self._fast_in_a_row = 0

    def note(self, seconds: float) -> None:
        self._fast_in_a_row = self._fast_in_a_row + 1 if seconds <= self.below_seconds else 0

    @property
    def whole(self) -> bool:
        return self.after > 0 and self._fast_in_a_row >= self.after


@dataclass
class TurnFigures:
    """What a turn cost, stored in the outbound message's meta."""

    model: str
    started: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    retries: int = 0
    first_request_at: float | None = None
    first_token_at: float | None = None
    rounds: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    language: str | None = None
    # Replies asked for again because they came back in the wrong script.
    language_retries: int = 0

    def meta(self, now: float) -> dict[str, Any]:
        ttft = None
        if self.first_token_at is not None and self.first_request_at is not None:
            ttft = round((self.first_token_at - self.first_request_at) * 1000, 2)
        return {
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "ttft_ms": ttft,
            "llm_ms": round((now - self.started) * 1000, 2),
            "llm_requests": self.requests,
            "llm_retries": self.retries,
            "tool_rounds": self.rounds,
            "tool_calls": self.tool_calls,
            **({"language": self.language} if self.language else {}),
            **({"language_retries": self.language_retries} if self.language_retries else {}),
        }


@dataclass
class _Round:
    content: str
    tool_calls: list[dict[str, str]]
    finish: str | None


@dataclass
class _Done:
    result: AgentResult


@dataclass
class _Failed:
    error: BaseException


class _Deadline:
    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.at = clock() + seconds

    def remaining(self) -> float:
        return self.at - self.clock()


def _error_code(exc: groq.APIError) -> str | None:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            code = inner.get("code")
            return str(code) if code is not None else None
    return None


def _retry_after(exc: groq.APIError | httpx.TransportError) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(float(value) / scale, 0.0)
        except ValueError:
            continue
    return None


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, AgentError) and isinstance(exc.__cause__, groq.APIError):
        return failure_reason(exc.__cause__)
    if isinstance(exc, TimeoutError | groq.APITimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, groq.AuthenticationError | groq.PermissionDeniedError):
        return "auth"
    if isinstance(exc, groq.RateLimitError):
        return "rate_limited"
    if isinstance(exc, groq.InternalServerError):
        return "server_error"
    if isinstance(exc, groq.BadRequestError):
        return "tool_use_failed" if _error_code(exc) == "tool_use_failed" else "bad_request"
    if isinstance(exc, groq.APIConnectionError | httpx.TransportError):
        return "connection"
    if isinstance(exc, groq.APIError):
        return "stream_error"
    if isinstance(exc, AgentError):
        return "invalid_output"
    return "error"


class LLMAgent:
    """Implements ``Agent`` and ``StreamingAgent``."""

    def __init__(
        self,
        client: groq.AsyncGroq,
        config: LLMConfig,
        catalogue: Catalogue,
        fallback: ScriptedAgent,
        knowledge: KnowledgeSearch | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.perf_counter,
        expand: Callable[[str], str] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.catalogue = catalogue
        self.fallback = fallback
        self.knowledge = knowledge
        self.breaker = breaker or CircuitBreaker()
        self.clock = clock
        # Query expansion (``QueryExpander``): English words for Hindi ones, product names.
        self.expand = expand or (lambda text: text)
        # A marker only the system prompt contains: seeing it in a reply means a prompt leak.
        self.canary = f"esoteric-{secrets.token_hex(6)}"
        self._tools = ToolSession.definitions()
        self.pace = ModelPace(config.whole_below_seconds, config.whole_after)

    # -- the Agent protocol ---------------------------------------------------------------------

    async def respond(self, ctx: TurnContext) -> AgentResult:
        result: AgentResult | None = None
        async for item in self._turn(ctx, streaming=False):
            if isinstance(item, AgentResult):
                result = item
        assert result is not None
        return result

    def stream(self, ctx: TurnContext) -> AsyncIterator[str | AgentResult]:
        return self._turn(ctx, streaming=True)

    # -- one turn ------------------------------------------------------------------------------

    async def _turn(self, ctx: TurnContext, streaming: bool) -> AsyncIterator[str | AgentResult]:
        """Runs the turn in its own task (so the deadline cancels model I/O, never the channel)
        and relays its deltas; the last item is the result."""
        queue: asyncio.Queue[str | _Done | _Failed] = asyncio.Queue()
        task = asyncio.create_task(self._produce(ctx, queue, streaming), name="llm-turn")
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Done):
                    yield item.result
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _produce(
        self, ctx: TurnContext, queue: asyncio.Queue[str | _Done | _Failed], streaming: bool
    ) -> None:
        figures = TurnFigures(self.config.model, self.clock())
        streaming = streaming and not self.pace.whole
        ctx, language = self._language(ctx)
        figures.language = language
        try:
            if not self.breaker.allow():
                result = await self._fall_back(ctx, "circuit_open", figures)
            else:
                budget = self.config.turn_deadline_seconds - self.config.fallback_reserve_seconds
                deadline = _Deadline(max(budget, 0.1), self.clock)
                try:
                    async with asyncio.timeout(max(budget, 0.1)):
                        result = await self._run(
                            ctx, queue.put_nowait, streaming, figures, deadline, language
                        )
                        if language and not in_script(result.reply.text, language):
                            # Asked once more, reminded of the language; not streamed, since
                            # the channel already holds the first attempt's checked preview.
                            log.info("reply not written in %s; asking the model again", language)
                            figures.language_retries += 1
                            result = await self._run(
                                ctx, _discard, False, figures, deadline, language, remind=True
                            )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any LLM failure ends in the scripted agent's answer
                    reason = failure_reason(exc)
                    if reason == "auth":
                        self.breaker.trip()
                        log.error(
                            "Groq rejected the API key (GROQ_API_KEY); using the scripted agent"
                        )
                    else:
                        self.breaker.record_failure()
                        log.warning("LLM turn failed (%s): %s", reason, exc)
                    result = await self._fall_back(ctx, reason, figures)
                else:
                    self.breaker.record_success()
                    if result.meta.get("ungrounded_figures") and result.lead is None:
                        # Money figures reach customers from tools only: a reply doing its own
                        # arithmetic is replaced by the scripted agent's answer to the same
                        # turn. (The API worked, so the breaker is not told.)
                        log.warning("LLM reply quoted figures no tool produced; scripted answer")
                        result = await self._fall_back(ctx, "ungrounded_figures", figures)
                    elif language and not in_script(result.reply.text, language):
                        log.warning("reply still not written in %s; scripted answer", language)
                        result = await self._fall_back(ctx, "wrong_language", figures)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            queue.put_nowait(_Failed(exc))
            return
        queue.put_nowait(_Done(result))

    def _language(self, ctx: TurnContext) -> tuple[TurnContext, str | None]:
        """The language to reply in, noted in the turn's state as the scripted agent notes it
        (so a fallback answers in it too). The sales team's assistant speaks English."""
        if ctx.persona == "sales":
            return ctx, None
        state = dict(ctx.state)
        language = self.fallback.follow_language(state, ctx.text)
        return (ctx if state == ctx.state else replace(ctx, state=state)), language

    async def _fall_back(self, ctx: TurnContext, reason: str, figures: TurnFigures) -> AgentResult:
        result = await self.fallback.respond(ctx)
        result.meta.update(figures.meta(self.clock()))
        result.meta.update(fallback=True, fallback_reason=reason, breaker=self.breaker.state)
        return result

    async def _run(
        self,
        ctx: TurnContext,
        emit: Callable[[str], None],
        streaming: bool,
        figures: TurnFigures,
        deadline: _Deadline,
        language: str | None = None,
        remind: bool = False,
    ) -> AgentResult:
        references = References()
        if self.knowledge is not None and needs_retrieval(ctx.text):
            try:
                query = self.expand(ctx.text)
                for hit in await self.knowledge.search(query, k=self.config.knowledge_k):
                    references.add(hit)
            except KnowledgeNotReady:
                pass  # still opening or ingesting: the model answers without references
            except KnowledgeError as exc:
                log.warning("knowledge search failed; answering without references: %s", exc)
        tools = ToolSession(
            ctx,
            self.catalogue,
            self.knowledge,
            references,
            self.config.currency,
            self.config.max_emi_to_income,
        )
        start, recent = prompt.window(ctx.history, self.config.history_tokens)
        summary, mark = prompt.roll_summary(
            ctx.summary, ctx.state.get("summary_mark"), ctx.history, start, prompt.SUMMARY_MAX_CHARS
        )
        system = prompt.system_prompt(ctx, self.catalogue, self.canary, language)
        messages = prompt.build_messages(ctx, system, references, summary, recent)
        if remind and language:
            messages.append(prompt.language_reminder(language))
        own_phones = _own_phones(ctx)

        def preview(text: str) -> str | None:
            """The streamed text as the final checks would leave it, or ``None`` when no
            part of it past this point may be shown."""
            text = _CITE.sub("", text)
            if echoes_prompt(text, system, self.canary):
                return None
            text, _ = remove_approval_promises(text, indicate=False)
            text, _ = redact_foreign_phones(text, own_phones)
            if _ungrounded(text, ctx, tools, references):
                return None
            if language and not in_script(text, language):
                return None  # asked again or answered by the scripted agent: never shown
            return text

        # Streamed text passes the same checks as the final text before any of it leaves.
        emit = HoldBack(emit, preview).feed

        parts: list[str] = []
        for round_no in range(self.config.max_tool_rounds + 1):
            # The last round may not call tools, so every turn ends in text.
            last = round_no == self.config.max_tool_rounds
            separator = "\n\n" if parts else ""
            current = await self._call(
                messages, "none" if last else "auto", emit, streaming, separator, figures, deadline
            )
            if current.content.strip():
                parts.append(current.content.strip())
            if not current.tool_calls:
                break
            figures.rounds += 1
            messages.append(
                {
                    "role": "assistant",
                    "content": current.content or None,
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["name"], "arguments": call["arguments"]},
                        }
                        for call in current.tool_calls
                    ],
                }
            )
            for call in current.tool_calls:
                output = await tools.call(call["name"], call["arguments"])
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": output})
        figures.tool_calls = tools.calls
        text = "\n\n".join(parts)
        if not text:
            raise AgentError("the model returned no text")
        return self._finish(ctx, text, tools, references, summary, mark, system, figures)

    def _finish(
        self,
        ctx: TurnContext,
        text: str,
        tools: ToolSession,
        references: References,
        summary: str | None,
        mark: str | None,
        system: str,
        figures: TurnFigures,
    ) -> AgentResult:
        cited: list[str] = []
        for match in _CITE.finditer(text):
            for alias in _CITE_IDS.findall(match.group(0)):
                if alias in references.by_alias and alias not in cited:
                    cited.append(alias)
        text = _CITE.sub("", text).strip()
        checked = check_reply(text, system, self.canary, _own_phones(ctx))
        citations = tuple(references.by_alias[a].citation() for a in cited)
        ungrounded = _ungrounded(checked.text, ctx, tools, references)
        if ungrounded:
            log.warning("reply quotes figures no tool produced: %s", ungrounded)
        state = dict(tools.state)
        if mark is not None:
            state["summary_mark"] = mark
        meta = figures.meta(self.clock())
        meta.update(fallback=False, breaker=self.breaker.state)
        if checked.corrections:
            meta["corrections"] = list(checked.corrections)
        if ungrounded:
            meta["ungrounded_figures"] = ungrounded
        return AgentResult(
            Reply(checked.text, citations=_dedupe(citations)),
            state,
            lead=tools.lead,
            wants_human=tools.wants_human,
            meta=meta,
            summary=summary if summary != ctx.summary else None,
        )

    # -- one model request, with retries -------------------------------------------------------

    async def _call(
        self,
        messages: list[dict[str, Any]],
        tool_choice: str,
        emit: Callable[[str], None],
        streaming: bool,
        separator: str,
        figures: TurnFigures,
        deadline: _Deadline,
    ) -> _Round:
        attempt = 0
        while True:
            emitted: list[bool] = [False]
            try:
                return await self._request(
                    messages, tool_choice, emit, streaming, separator, figures, emitted
                )
            except (groq.APIError, httpx.TransportError) as exc:
                if emitted[0] or not self._retryable(exc, attempt):
                    raise
                wait = _retry_after(exc)
                if wait is None:
                    wait = self.config.retry_backoff_seconds * (2**attempt)
                if wait >= deadline.remaining():
                    raise AgentError(
                        f"the API asked to wait {wait:.1f}s, beyond the turn deadline"
                    ) from exc
                attempt += 1
                figures.retries += 1
                log.info("retrying the model request in %.2fs (%s)", wait, failure_reason(exc))
                await asyncio.sleep(wait)

    def _retryable(self, exc: groq.APIError | httpx.TransportError, attempt: int) -> bool:
        if isinstance(exc, groq.BadRequestError):
            # A malformed generated tool call: one fresh sample often succeeds.
            return _error_code(exc) == "tool_use_failed" and attempt < 1
        if attempt >= self.config.max_retries:
            return False
        if isinstance(exc, groq.APIStatusError):
            return exc.status_code in (408, 409, 429) or exc.status_code >= 500
        # Connection errors, timeouts, and error frames that arrived before any text.
        return True

    async def _request(
        self,
        messages: list[dict[str, Any]],
        tool_choice: str,
        emit: Callable[[str], None],
        streaming: bool,
        separator: str,
        figures: TurnFigures,
        emitted: list[bool],
    ) -> _Round:
        figures.requests += 1
        if figures.first_request_at is None:
            figures.first_request_at = self.clock()
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "tools": self._tools,
            "tool_choice": tool_choice,
            "temperature": self.config.temperature,
            "max_completion_tokens": self.config.max_completion_tokens,
            "stream": streaming,
        }
        # The SDK's raw ``post`` (its documented way to send a body as is): same HTTP client,
        # errors and SSE decoding, without building typed request and chunk models, which cost
        # more CPU per turn than everything else the agent does.
        started = self.clock()
        if not streaming:
            completion = await self.client.post(COMPLETIONS_PATH, body=body, cast_to=object)
            self.pace.note(self.clock() - started)
            if figures.first_token_at is None:
                figures.first_token_at = self.clock()
            if not isinstance(completion, dict) or not completion.get("choices"):
                raise AgentError("the model returned no choices")
            self._count(figures, completion.get("usage"))
            choice = completion["choices"][0]
            message = choice.get("message") or {}
            calls = [
                {
                    "id": str(c.get("id") or ""),
                    "name": str((c.get("function") or {}).get("name") or ""),
                    "arguments": str((c.get("function") or {}).get("arguments") or ""),
                }
                for c in message.get("tool_calls") or []
            ]
            return _Round(str(message.get("content") or ""), calls, choice.get("finish_reason"))

        stream = await self.client.post(
            COMPLETIONS_PATH,
            body=body,
            cast_to=object,
            stream=True,
            stream_cls=groq.AsyncStream[object],
        )
        content: list[str] = []
        calls_by_index: dict[int, dict[str, str]] = {}
        finish: str | None = None
        async with stream:
            async for chunk in stream:
                if not isinstance(chunk, dict):
                    raise AgentError("the stream sent a frame that is not a JSON object")
                self._count(figures, chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage"))
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    text = delta.get("content")
                    if text:
                        if figures.first_token_at is None:
                            figures.first_token_at = self.clock()
                        if not emitted[0] and separator:
                            emit(separator)
                        emitted[0] = True
                        content.append(text)
                        emit(text)
                    for call in delta.get("tool_calls") or ():
                        if figures.first_token_at is None:
                            figures.first_token_at = self.clock()
                        slot = calls_by_index.setdefault(
                            int(call.get("index", 0)), {"id": "", "name": "", "arguments": ""}
                        )
                        if call.get("id"):
                            slot["id"] = str(call["id"])
                        function = call.get("function") or {}
                        slot["name"] += function.get("name") or ""
                        slot["arguments"] += function.get("arguments") or ""
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
        if finish is None:
            raise AgentError("the stream ended before the model finished its reply")
        self.pace.note(self.clock() - started)
        calls = [calls_by_index[i] for i in sorted(calls_by_index)]
        for number, call in enumerate(calls):
            call["id"] = call["id"] or f"call_{number}"
        return _Round("".join(content), calls, finish)

    @staticmethod
    def _count(figures: TurnFigures, usage: Any) -> None:
        if isinstance(usage, dict):
            figures.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            figures.completion_tokens += int(usage.get("completion_tokens") or 0)


def _own_phones(ctx: TurnContext) -> list[str]:
    """The numbers the customer gave: a reply may repeat them."""
    phones = [parse_indian_mobile(t) or "" for t in (ctx.text, ctx.contact_phone or "")]
    return phones + [parse_indian_mobile(h.text) or "" for h in ctx.history if h.role == "user"]


def _ungrounded(
    text: str, ctx: TurnContext, tools: ToolSession, references: References
) -> list[str]:
    """Amounts in ``text`` that no tool produced and nobody wrote (the model's own sums)."""
    grounded = set(tools.figures) | _money_in(ctx.text, *references.texts())
    grounded |= _money_in(*(h.text for h in ctx.history))
    known = {_norm(g) for g in grounded}
    return sorted(m for m in _money_in(text) if _norm(m) not in known)


def _money_in(*texts: str) -> set[str]:
    found: set[str] = set()
    for text in texts:
        found.update(_MONEY.findall(text))
    return found


def _norm(money: str) -> str:
    return re.sub(r"[₹\s,]", "", money).removesuffix(".00")


def _dedupe(citations: tuple[Citation, ...]) -> tuple[Citation, ...]:
    seen: set[str] = set()
    unique = []
    for citation in citations:
        if citation.chunk_id not in seen:
            seen.add(citation.chunk_id)
            unique.append(citation)
    return tuple(unique)


def tool_definitions_json() -> str:
    """The tool schema as sent to the API, for documentation and debugging."""
    return json.dumps(ToolSession.definitions(), indent=2)


def _discard(_delta: str) -> None:
    """Where a non-streamed attempt's deltas go."""
