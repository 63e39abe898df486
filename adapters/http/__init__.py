"""The web channel: REST and WebSocket API for a website's chat."""

from adapters.http.channel import CHANNEL, WebChannel, WebConfig

__all__ = ["CHANNEL", "WebChannel", "WebConfig"]
