"""One error root for Esoteric, with a few meaningful subclasses.

SDK and driver errors are translated into these at the edge (``raise ... from exc``) so callers
handle a small, stable set.
"""

from __future__ import annotations


class EsotericError(Exception):
    """Root of every error Esoteric raises on purpose."""


class ConfigError(EsotericError):
    """A setting is missing or has a value Esoteric cannot use."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class StoreError(EsotericError):
    """The database could not do what was asked."""


class StoreUnavailable(StoreError):
    """The database is locked, down or unreachable; the caller may retry later."""


class CatalogueError(EsotericError):
    """The product catalogue file is missing or inconsistent."""


class InputError(EsotericError):
    """A user or client sent something Esoteric cannot accept (too long, empty, malformed)."""


class ChatEnded(InputError):
    """The chat was ended for good (a deleted API session): it takes no more messages."""


class ChannelError(EsotericError):
    """A channel could not deliver or receive a message."""


class RetryLater(ChannelError):
    """The platform asked to wait (a rate limit): send again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AgentError(EsotericError):
    """The LLM agent failed; the scripted agent answers instead."""


class KnowledgeError(EsotericError):
    """The knowledge base is unusable (model not loadable, Chroma unreachable, bad document)."""
