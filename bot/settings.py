"""Settings from the environment or a ``.env`` file, named as the external contract says."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.errors import ConfigError
from core.hours import BusinessHours

DEFAULT_LLM_MODEL = "llama-3.3-70b-versatile"


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ESOTERIC_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    data_dir: Path = Path("./data")
    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    chroma_url: str | None = None
    embedding_model_dir: Path | None = None
    # Chunks scoring below this cosine similarity are not used as answers.
    knowledge_min_score: float = Field(default=0.30, ge=0, le=1)
    knowledge_top_k: int = Field(default=4, ge=1, le=50)
    groq_api_key: SecretStr | None = Field(default=None, validation_alias="GROQ_API_KEY")
    groq_base_url: str | None = Field(default=None, validation_alias="GROQ_BASE_URL")
    llm_model: str = DEFAULT_LLM_MODEL
    # Every LLM turn ends within this many seconds, answered by the scripted agent if need be.
    llm_turn_deadline_seconds: float = Field(default=20.0, gt=0, le=300)
    llm_request_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_retry_backoff_seconds: float = Field(default=0.5, ge=0, le=30)
    llm_max_tool_rounds: int = Field(default=4, ge=1, le=10)
    llm_history_tokens: int = Field(default=1500, ge=100, le=100_000)
    llm_breaker_failures: int = Field(default=3, ge=1, le=100)
    llm_breaker_cooldown_seconds: float = Field(default=60.0, ge=0, le=3600)
    telegram_bot_token: SecretStr | None = Field(
        default=None, validation_alias="TELEGRAM_BOT_TOKEN"
    )
    telegram_api_url: str | None = None
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    # The bot's sends a second, across its processes (Telegram allows about 30; paid broadcasts
    # more). Streamed replies stop editing when the budget is saturated.
    telegram_messages_per_second: float = Field(default=30.0, gt=0, le=1000)
    slack_bot_token: SecretStr | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(
        default=None, validation_alias="SLACK_SIGNING_SECRET"
    )
    slack_app_token: SecretStr | None = Field(default=None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str | None = None
    slack_sales_channel: str | None = None
    admins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    session_idle_minutes: int = Field(default=30, gt=0)
    cleanup_interval_minutes: int = Field(default=5, gt=0)
    handoff_sla_minutes: int = Field(default=10, gt=0)
    # A claimed handoff with no message either way for this long goes back to the bot.
    handoff_idle_minutes: int = Field(default=30, gt=0)
    # How often the scheduler checks handoff timers (reminders, idle handoffs).
    handoff_check_seconds: int = Field(default=60, ge=5, le=3600)
    # When reps answer, like "Mon-Fri 09:30-18:00", in ESOTERIC_BUSINESS_TIMEZONE; unset: always.
    business_hours: str | None = None
    business_timezone: str = "UTC"
    # Admin broadcasts: messages a second (Telegram allows about 30 overall).
    broadcast_per_second: float = Field(default=20.0, gt=0, le=30)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # The sales dashboard (/admin, /api/v1/admin/...): its own keys, never the public API's.
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Signs the dashboard's session cookie. Every process must share it (a cookie made by one
    # is checked by another), so it is required with admin keys rather than made up locally.
    admin_secret: SecretStr | None = None
    # Requests a minute to /api/v1/admin/... per dashboard login (or per admin key); the page
    # spends six per load (five panels and the conversation search).
    admin_requests_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    # The operator's own figure for the LLM's price, in USD per million tokens (prompt and
    # completion alike), for the dashboard's cost estimate; not a price list the bot keeps.
    llm_price_per_million_tokens: Decimal = Field(default=Decimal("0.59"), ge=0, le=1000)
    # Browser origins allowed to call the API (CORS); empty: no cross-origin access.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Requests (and WebSocket messages) each API key may make per minute.
    rate_limit_per_minute: int = Field(default=120, ge=1, le=1_000_000)
    # Largest request body (and WebSocket frame) accepted, in bytes.
    max_body_bytes: int = Field(default=65_536, ge=1024, le=16 * 1024 * 1024)
    # A key from ESOTERIC_API_KEYS that the chat page at / embeds for visitors: public by design,
    # so give it its own rate limit budget. Unset: the page asks for a key.
    web_chat_key: SecretStr | None = None
    log_format: str = Field(default="text", pattern=r"^(text|json)$")
    currency: str = Field(default="INR", pattern=r"^[A-Z]{3}$")
    # The customers' language until their own is detected (or chosen with /language).
    default_language: Literal["en", "hi", "hinglish"] = "en"
    # Voice notes: Groq's Whisper model, the longest note listened to, and whether the audio is
    # kept (in the database's voice_clips table) after it has been transcribed.
    stt_model: str = "whisper-large-v3-turbo"
    voice_max_seconds: float = Field(default=120, gt=0, le=3600)
    keep_audio: bool = False
    max_emi_to_income: Decimal | None = Field(default=None, gt=0, lt=1)
    log_level: str = "INFO"
    # Turns in flight per process: bounded so the database pool is never exhausted (a turn
    # holds a connection only for its short transactions, never across an LLM call).
    worker_concurrency: int = Field(default=16, ge=1, le=512)
    # Shared state across processes (rate limits, Telegram's send budget, WebSocket fan-out).
    redis_url: str | None = None
    # The public web-chat key (ESOTERIC_WEB_CHAT_KEY) is shared by every visitor: its own
    # overall budget, and limits per session and per client address on top of it.
    web_chat_key_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    web_chat_session_per_minute: int = Field(default=20, ge=1, le=10_000)
    web_chat_ip_per_minute: int = Field(default=60, ge=1, le=100_000)
    # Flood control, on every channel: messages one sender may send a minute (beyond it, one
    # "slow down" answer and silence), consecutive waiting messages of a chat answered as one
    # turn, edits of one message answered at most this many times.
    flood_messages_per_minute: int = Field(default=20, ge=1, le=10_000)
    merge_messages: int = Field(default=5, ge=1, le=50)
    max_edits: int = Field(default=3, ge=0, le=100)
    # LLM tokens one conversation may use a day (UTC); past it the scripted agent answers.
    llm_daily_tokens: int = Field(default=60_000, ge=0, le=10_000_000)

    @field_validator("admins", "api_keys", "admin_keys", "cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _comma_list(value)

    @field_validator("default_language", mode="before")
    @classmethod
    def _language(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("admins")
    @classmethod
    def _admin_format(cls, value: list[str]) -> list[str]:
        for item in value:
            channel, _, ident = item.partition(":")
            if not channel or not ident:
                raise ValueError(f"{item!r} is not channel:id (for example telegram:123456)")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        try:
            url = make_url(value.get_secret_value())
        except ArgumentError as exc:
            raise ValueError(
                "not a SQLAlchemy URL (e.g. sqlite+aiosqlite:///data/esoteric.db "
                "or postgresql+asyncpg://user@host/db)"
            ) from exc
        if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(
                f"driver {url.drivername!r} is not supported; use sqlite+aiosqlite "
                "or postgresql+asyncpg"
            )
        return value

    @field_validator(
        "chroma_url", "groq_base_url", "telegram_api_url", "slack_api_url", "telegram_webhook_url"
    )
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if not value.endswith("/api/") else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis:// (or rediss://, unix://) URL")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin like https://shop.example.com")
        return [origin.rstrip("/") for origin in value]

    @model_validator(mode="after")
    def _web_chat_key_is_an_api_key(self) -> Settings:
        if self.web_chat_key is not None and self.web_chat_key.get_secret_value() not in {
            key.get_secret_value() for key in self.api_keys
        }:
            raise ValueError("ESOTERIC_WEB_CHAT_KEY must be one of ESOTERIC_API_KEYS")
        return self

    @model_validator(mode="after")
    def _admin_secret_with_admin_keys(self) -> Settings:
        if not self.admin_keys:
            return self
        secret = self.admin_secret.get_secret_value() if self.admin_secret else ""
        if len(secret) < 32:
            raise ValueError(
                "ESOTERIC_ADMIN_SECRET must be set, at least 32 characters, with "
                "ESOTERIC_ADMIN_KEYS (it signs the dashboard's session cookie; give every "
                "process the same one)"
            )
        public = {key.get_secret_value() for key in self.api_keys}
        if any(key.get_secret_value() in public for key in self.admin_keys):
            raise ValueError("ESOTERIC_ADMIN_KEYS must differ from ESOTERIC_API_KEYS")
        return self

    @model_validator(mode="after")
    def _business_hours(self) -> Settings:
        self.hours()  # a bad ESOTERIC_BUSINESS_HOURS or timezone fails at startup
        return self

    def hours(self) -> BusinessHours | None:
        if not self.business_hours:
            return None
        try:
            return BusinessHours.parse(self.business_hours, self.business_timezone)
        except ValueError as exc:
            raise ValueError(f"ESOTERIC_BUSINESS_HOURS: {exc}") from None

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> Settings:
        if self.telegram_webhook_url and not self.telegram_webhook_secret:
            raise ValueError(
                "ESOTERIC_TELEGRAM_WEBHOOK_SECRET must be set with ESOTERIC_TELEGRAM_WEBHOOK_URL"
            )
        return self

    # -- derived -------------------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        path = (self.data_dir / "esoteric.db").resolve()
        return f"sqlite+aiosqlite:///{path}"

    @property
    def is_embedded_database(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def safe_database_url(self) -> str:
        return make_url(self.resolved_database_url).render_as_string(hide_password=True)


# The environment name for each field, for error messages that name what the user set.
def env_name(field: str) -> str:
    aliases = {f.validation_alias for f in Settings.model_fields.values()}
    if field in aliases:
        return field
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, str):
        return info.validation_alias
    return f"ESOTERIC_{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning a validation failure into one ``ConfigError`` naming the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first.get("loc", ())]
        field = loc[0] if loc else ""
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        if not field:
            # Model-level checks name their settings in the message itself.
            raise ConfigError("settings", message) from None
        raise ConfigError(env_name(field), message) from None
