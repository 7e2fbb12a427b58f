"""The YAML config: its schema and defaults (`schema`), reading it with the line of every
key (`lines`), and every problem of a file at once, with its key path and line (`problems`,
`load`)."""

from pinsyncd.config.load import load_config, parse_config
from pinsyncd.config.problems import EX_CONFIG, ConfigError, Problem
from pinsyncd.config.schema import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigFile,
    HttpConfig,
    NodeConfig,
    RetryConfig,
    Service,
    ServiceConfig,
    StateConfig,
    SyncConfig,
    default_config_path,
    default_state_path,
    is_loopback_host,
    node_api_url,
    normalize_endpoint,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "EX_CONFIG",
    "Config",
    "ConfigError",
    "ConfigFile",
    "HttpConfig",
    "NodeConfig",
    "Problem",
    "RetryConfig",
    "Service",
    "ServiceConfig",
    "StateConfig",
    "SyncConfig",
    "default_config_path",
    "default_state_path",
    "is_loopback_host",
    "load_config",
    "node_api_url",
    "normalize_endpoint",
    "parse_config",
]
