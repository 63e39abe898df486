"""Builds the channel adapters the settings enable. Each channel's branch is its own function so
that channels can be added without touching each other."""

from __future__ import annotations

from adapters.base import ChannelAdapter
from bot.runtime import Runtime


def build_channels(runtime: Runtime) -> list[ChannelAdapter]:
    channels: list[ChannelAdapter] = []
    return channels
