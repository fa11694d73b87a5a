"""Opening the ledger as a process does, from a test's settings (off the event loop)."""

from __future__ import annotations

import asyncio

from exchange.ingest.ledger import Ledger
from exchange.settings import Settings


async def open_ledger(settings: Settings) -> Ledger:
    assert settings.database_url
    return await asyncio.to_thread(
        Ledger,
        settings.database_url,
        settings.secrets.ledger_cipher_key,
        settings.secrets.pseudonym_key,
        crypto_profile=settings.crypto_profile,
    )
