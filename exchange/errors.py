"""The exchange's errors.

    ExchangeError               base; every error has a stable ``code``
    ├── ConfigurationError      settings that cannot work; the message says which and how to fix
    ├── EmbeddedServerError     an embedded PostgreSQL or NATS server did not start
    └── NotRunning              a CLI command needs a running exchange and found none
"""

from __future__ import annotations


class ExchangeError(Exception):
    code = "exchange"


class ConfigurationError(ExchangeError):
    code = "config.invalid"


class EmbeddedServerError(ExchangeError):
    code = "embedded.failed"


class NotRunning(ExchangeError):
    code = "exchange.not_running"
