"""Settings: read once from the environment, then overridden by CLI flags."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

DEFAULT_UPSTREAM_URL = "https://api.openai.com/v1"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./gateway.db"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
HISTORY_STRATEGIES = ("sliding", "stable", "summarize")


class ConfigError(ValueError):
    """A setting has a value the gateway cannot use."""


def normalize_upstream_url(url: str) -> str:
    """Return the upstream base URL without a trailing slash; a URL with no path gets `/v1`."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"upstream URL must be an http(s) URL, got {url!r}")
    if "@" in parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        raise ConfigError(
            f"upstream URL must not hold credentials (user:password@{host}): "
            "set the upstream key with GATEWAY_UPSTREAM_API_KEY instead"
        )
    path = parts.path.rstrip("/")
    if not path:
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return value


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    valid: Callable[[float], bool],
    unparsable: str,
    invalid: str,
) -> float:
    """A float setting: `default` when unset; `unparsable` or `invalid` (then the raw value) as the error."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} {unparsable}, got {raw!r}") from None
    if not valid(value):
        raise ConfigError(f"{name} {invalid}, got {raw!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, lambda v: v > 0, "must be a number of seconds", "must be positive")


def _seconds_or_zero(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        if raw and float(raw) == 0:
            return 0.0
    except ValueError:
        pass  # _float reports it
    return _float(env, name, default)


def _path_list(raw: str) -> tuple[str, ...]:
    """Comma-separated path prefixes below /v1, as `evals` (from `/v1/evals`, `v1/evals/` or `evals`)."""
    out: list[str] = []
    for entry in raw.split(","):
        path = entry.strip().strip("/")
        if path == "v1" or path.startswith("v1/"):
            path = path[3:]
        if any(part in (".", "..") for part in path.split("/")) or "%" in path:
            raise ConfigError(f"GATEWAY_PROXY_ALLOW holds an unusable path prefix: {entry.strip()!r}")
        if path and path not in out:
            out.append(path)
    return tuple(out)


def _ratio(env: Mapping[str, str], name: str, default: float) -> float:
    message = "must be a number from 0 to 1"
    return _number(env, name, default, lambda v: 0 <= v <= 1, message, message)


def _strategy(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in HISTORY_STRATEGIES:
        raise ConfigError(f"{name} must be one of {', '.join(HISTORY_STRATEGIES)}, got {raw!r}")
    return raw


def _bool(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the gateway can be told; see the README's configuration table."""

    host: str = "127.0.0.1"
    port: int = 8000
    upstream_url: str = DEFAULT_UPSTREAM_URL
    upstream_api_key: str | None = None
    database_url: str = DEFAULT_DATABASE_URL
    upstream_timeout: float = 600.0
    upstream_connect_timeout: float = 10.0
    lock_timeout: float = 60.0
    lock_lease: float = 30.0
    max_history_messages: int | None = None
    max_history_tokens: int | None = None
    prices_file: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    max_response_bytes: int = 16 * 1024 * 1024
    admin_key: str | None = None
    key_cache_seconds: float = 5.0
    shutdown_grace: float = 30.0
    log_format: str = "text"
    log_level: str = "INFO"
    log_content: bool = False
    metrics_dir: str | None = None
    replay_window: float = 600.0
    db_pool_size: int = 10
    db_transaction_pooling: bool = False
    workers: int = 1
    budget_reserve_tokens: int = 4096
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1000
    proxy_allow: tuple[str, ...] = ()
    max_conversations_per_caller: int = 10_000
    token_check_seconds: float = 300.0
    metrics_key: str | None = None
    history_strategy: str = "stable"
    history_trim_to: float = 0.5
    summary_model: str | None = None
    summary_prompt_file: str | None = None
    summary_timeout: float = 60.0
    prompt_cache_key: bool = False
    responses_mode: str = "translate"  # GATEWAY_RESPONSES: translate | passthrough
    ui_session_seconds: float = 8 * 3600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from `GATEWAY_*` environment variables."""
        default = cls()
        log_format = env.get("GATEWAY_LOG_FORMAT", default.log_format).strip().lower() or "text"
        if log_format not in ("text", "json"):
            raise ConfigError(f"GATEWAY_LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
        log_level = env.get("GATEWAY_LOG_LEVEL", "").strip().upper() or default.log_level
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"GATEWAY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        responses_mode = env.get("GATEWAY_RESPONSES", "").strip().lower() or default.responses_mode
        if responses_mode not in ("translate", "passthrough"):
            raise ConfigError(
                f"GATEWAY_RESPONSES must be 'translate' or 'passthrough', got {responses_mode!r}"
            )
        return cls(
            host=env.get("GATEWAY_HOST", "").strip() or default.host,
            port=_int(env, "GATEWAY_PORT", default.port) or default.port,
            upstream_url=normalize_upstream_url(env.get("GATEWAY_UPSTREAM_URL", "") or DEFAULT_UPSTREAM_URL),
            upstream_api_key=env.get("GATEWAY_UPSTREAM_API_KEY", "").strip() or None,
            database_url=env.get("GATEWAY_DATABASE_URL", "").strip() or default.database_url,
            upstream_timeout=_float(env, "GATEWAY_UPSTREAM_TIMEOUT", default.upstream_timeout),
            lock_timeout=_float(env, "GATEWAY_LOCK_TIMEOUT", default.lock_timeout),
            lock_lease=_float(env, "GATEWAY_LOCK_LEASE", default.lock_lease),
            max_history_messages=_int(env, "GATEWAY_MAX_HISTORY_MESSAGES", None),
            max_history_tokens=_int(env, "GATEWAY_MAX_HISTORY_TOKENS", None),
            prices_file=env.get("GATEWAY_PRICES_FILE", "").strip() or None,
            max_body_bytes=_int(env, "GATEWAY_MAX_BODY_BYTES", default.max_body_bytes)
            or default.max_body_bytes,
            max_response_bytes=_int(env, "GATEWAY_MAX_RESPONSE_BYTES", default.max_response_bytes)
            or default.max_response_bytes,
            admin_key=env.get("GATEWAY_ADMIN_KEY", "").strip() or None,
            key_cache_seconds=_seconds_or_zero(env, "GATEWAY_KEY_CACHE_SECONDS", default.key_cache_seconds),
            shutdown_grace=_float(env, "GATEWAY_SHUTDOWN_GRACE", default.shutdown_grace),
            log_format=log_format,
            log_level=log_level,
            log_content=_bool(env, "GATEWAY_LOG_CONTENT"),
            # prometheus-client's own variable: it switches the library to multiprocess mode on import.
            metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR", "").strip() or None,
            replay_window=_float(env, "GATEWAY_RETRY_REPLAY_WINDOW", default.replay_window),
            db_pool_size=_int(env, "GATEWAY_DB_POOL_SIZE", default.db_pool_size) or default.db_pool_size,
            db_transaction_pooling=_bool(env, "GATEWAY_DB_TRANSACTION_POOLING"),
            workers=_int(env, "GATEWAY_WORKERS", default.workers) or default.workers,
            budget_reserve_tokens=_int(env, "GATEWAY_BUDGET_RESERVE_TOKENS", default.budget_reserve_tokens)
            or 0,
            header_timeout=_float(env, "GATEWAY_HEADER_TIMEOUT", default.header_timeout),
            body_timeout=_float(env, "GATEWAY_BODY_TIMEOUT", default.body_timeout),
            keep_alive_timeout=_float(env, "GATEWAY_KEEP_ALIVE_TIMEOUT", default.keep_alive_timeout),
            max_connections=_int(env, "GATEWAY_MAX_CONNECTIONS", default.max_connections)
            or default.max_connections,
            proxy_allow=_path_list(env.get("GATEWAY_PROXY_ALLOW", "")),
            max_conversations_per_caller=_int(
                env, "GATEWAY_MAX_CONVERSATIONS_PER_CALLER", default.max_conversations_per_caller
            )
            or 0,
            token_check_seconds=_seconds_or_zero(
                env, "GATEWAY_TOKEN_CHECK_SECONDS", default.token_check_seconds
            ),
            metrics_key=env.get("GATEWAY_METRICS_KEY", "").strip() or None,
            history_strategy=_strategy(env, "GATEWAY_HISTORY_STRATEGY", default.history_strategy),
            history_trim_to=_ratio(env, "GATEWAY_HISTORY_TRIM_TO", default.history_trim_to),
            summary_model=env.get("GATEWAY_SUMMARY_MODEL", "").strip() or None,
            summary_prompt_file=env.get("GATEWAY_SUMMARY_PROMPT_FILE", "").strip() or None,
            summary_timeout=_float(env, "GATEWAY_SUMMARY_TIMEOUT", default.summary_timeout),
            prompt_cache_key=_bool(env, "GATEWAY_PROMPT_CACHE_KEY"),
            responses_mode=responses_mode,
            ui_session_seconds=_float(env, "GATEWAY_UI_SESSION_SECONDS", default.ui_session_seconds),
        )

    @property
    def is_sqlite(self) -> bool:
        """True when the database is an SQLite file (single process only)."""
        return self.database_url.startswith("sqlite")
