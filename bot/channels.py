"""Builds the channel adapters the settings enable. Each channel's branch is its own function so
that channels can be added without touching each other."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from adapters.base import ChannelAdapter
from bot.runtime import Runtime
from core.errors import ConfigError
from core.fanout import fanout_for
from core.quote import quote_pdf
from core.ratelimit import RateLimits
from core.store.leader import LeaderLock

if TYPE_CHECKING:
    from adapters.slack import SlackChannel


def build_channels(runtime: Runtime, *, receive: bool = True) -> list[ChannelAdapter]:
    """The enabled channels, each connected to the core here and only here: its outbound port
    registered with the service, the Slack channel attached to the handoff as its sales desk.
    ``receive=False`` (``esoteric worker``): channels that only send."""
    channels: list[ChannelAdapter] = []
    telegram = build_telegram(runtime, receive=receive)
    if telegram is not None:
        channels.append(telegram)
    slack = build_slack(runtime)
    if slack is not None:
        channels.append(slack)
        if slack.handoffs is not None:
            slack.handoffs.attach_desk(slack)
    web = build_web(runtime)
    if web is not None:
        channels.append(web)
    for channel in channels:
        runtime.service.register_channel(channel.name, channel)
    return channels


def build_web(runtime: Runtime) -> ChannelAdapter | None:
    """The REST/WebSocket API and the chat page, when API keys are set (the API is off, its
    routes absent, without them)."""
    settings = runtime.settings
    if not settings.api_keys:
        return None
    from adapters.http import WebChannel, WebConfig

    config = WebConfig(
        api_keys=tuple(key.get_secret_value() for key in settings.api_keys),
        rate_limit_per_minute=settings.rate_limit_per_minute,
        max_body_bytes=settings.max_body_bytes,
        page_key=settings.web_chat_key.get_secret_value() if settings.web_chat_key else None,
        page_key_per_minute=settings.web_chat_key_per_minute,
        page_session_per_minute=settings.web_chat_session_per_minute,
        page_address_per_minute=settings.web_chat_ip_per_minute,
    )
    # Rate limits and the sockets' fan-out span every process through Redis when it is set.
    limits = RateLimits(settings.redis_url)
    fanout = fanout_for(settings.redis_url)
    runtime.close_later(limits.aclose)
    runtime.close_later(fanout.aclose)
    return WebChannel(
        runtime.service,
        runtime.db,
        config,
        runtime.knowledge,
        runtime.knowledge_problem,
        limits=limits,
        fanout=fanout,
    )


def build_telegram(runtime: Runtime, *, receive: bool = True) -> ChannelAdapter | None:
    """Telegram when its bot token is set: long polling (by one process at a time when there
    are several), or a webhook when its URL is set."""
    settings = runtime.settings
    if settings.telegram_bot_token is None:
        return None
    from adapters.telegram import TelegramChannel, TelegramConfig
    from core.sendbudget import send_budget_for

    secret = settings.telegram_webhook_secret
    config = TelegramConfig(
        token=settings.telegram_bot_token.get_secret_value(),
        api_url=settings.telegram_api_url,
        webhook_url=settings.telegram_webhook_url,
        webhook_secret=secret.get_secret_value() if secret else None,
        messages_per_second=settings.telegram_messages_per_second,
        receive=receive,
    )
    leader = (
        LeaderLock(runtime.postgres_dsn, "telegram-polling")
        if runtime.postgres_dsn is not None and receive and not config.webhook_url
        else None
    )
    # Telegram's limits are the bot's, not a process's: shared through Redis when it is set.
    budget = send_budget_for(settings.redis_url, config.messages_per_second)
    runtime.close_later(budget.aclose)
    return TelegramChannel(
        runtime.service,
        config,
        leader=leader,
        budget=budget,
        documents=partial(quote_pdf, runtime.catalogue),
    )


def build_slack(runtime: Runtime) -> SlackChannel | None:
    """Slack when its bot token is set, with the signing secret (HTTP events) or an app token
    (Socket Mode)."""
    settings = runtime.settings
    token, secret, app_token = (
        settings.slack_bot_token,
        settings.slack_signing_secret,
        settings.slack_app_token,
    )
    if token is None and secret is None and app_token is None:
        return None
    if token is None:
        raise ConfigError("SLACK_BOT_TOKEN", "must be set to enable Slack")
    if secret is None and app_token is None:
        raise ConfigError(
            "SLACK_SIGNING_SECRET",
            "must be set with SLACK_BOT_TOKEN (or set SLACK_APP_TOKEN for Socket Mode)",
        )
    from adapters.slack import SlackChannel, SlackConfig
    from core.replay import replay_guard_for
    from core.salesdesk import SalesDesk

    config = SlackConfig(
        bot_token=token.get_secret_value(),
        signing_secret=secret.get_secret_value() if secret else None,
        app_token=app_token.get_secret_value() if app_token else None,
        api_url=settings.slack_api_url,
        sales_channel=settings.slack_sales_channel,
        # "slack:U0ABC" entries of ESOTERIC_ADMINS: they see lead data without membership.
        admins=frozenset(
            ident
            for channel, _, ident in (entry.partition(":") for entry in settings.admins)
            if channel == "slack"
        ),
    )
    desk = SalesDesk(runtime.db, runtime.catalogue, settings.currency)
    # A signed slash command or button press is run once, whichever process it reaches.
    replay = replay_guard_for(settings.redis_url)
    runtime.close_later(replay.aclose)
    # Lead cards and their threads need the sales channel; admins use /esoteric either way.
    return SlackChannel(
        runtime.service,
        desk,
        config,
        handoffs=runtime.handoffs,
        admin=runtime.admin,
        replay=replay,
        transcriber=runtime.transcriber,
    )
