"""The exchange's errors: the ``ExchangeError`` branch of the one tree drawn in
``domain/errors.py`` (``TokenError`` lives in ``exchange.auth.tokens``, ``Refused`` in
``exchange.api.responses``).
"""

from __future__ import annotations

from domain.errors import HieError


class ExchangeError(HieError):
    code = "exchange"


class ConfigurationError(ExchangeError):
    code = "config.invalid"


class EmbeddedServerError(ExchangeError):
    code = "embedded.failed"


class NotRunning(ExchangeError):
    code = "exchange.not_running"


class BackupError(ExchangeError):
    """A backup that cannot be taken, or one that cannot be restored here (the message says
    which file, stream or key, and what to do)."""

    code = "backup.failed"
