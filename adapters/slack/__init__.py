"""The Slack channel: the sales team's internal assistant (Events API or Socket Mode)."""

from __future__ import annotations

from adapters.slack.channel import SlackChannel, SlackConfig

__all__ = ["SlackChannel", "SlackConfig"]
