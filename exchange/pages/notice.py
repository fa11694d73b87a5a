"""The consortium's consent notice (告知书): the text a patient reads before giving a separate
consent in the portal (PIPL Art. 17, 29–30). It is the consortium's own document, kept as a
UTF-8 text file (``HIE_CONSENT_NOTICE``, by default ``<data dir>/consent_notice.txt``): the
first line is its title (with its version), a blank line parts its paragraphs. The page shows
it as written, whatever the page's language, and the consent records the SHA-256 of exactly
these bytes, so that what a patient agreed to can be shown again word for word.

It is read when a page needs it (and again only once the file changes), so a new version of
the notice takes effect without a restart; a consent form carries the hash of the notice it
showed, and a consent sent from a page that showed an older version is refused."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from exchange.errors import ConfigurationError

MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class Notice:
    title: str
    paragraphs: tuple[str, ...]
    sha256: str


def parse_notice(data: bytes, where: str) -> Notice:
    """The notice in these bytes; ``where`` names the file in the error."""
    if len(data) > MAX_BYTES:
        raise ConfigurationError(f"{where}: a consent notice is at most {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{where}: a consent notice is UTF-8 text (byte {exc.start} is not)"
        ) from None
    title, _, rest = text.replace("\r\n", "\n").strip().partition("\n")
    # A paragraph keeps the line breaks it was written with (the page shows them).
    paragraphs = tuple(p.strip() for p in rest.split("\n\n") if p.strip())
    if not title.strip() or not paragraphs:
        raise ConfigurationError(
            f"{where}: a consent notice starts with its title on the first line, then its "
            "text, paragraphs parted by a blank line"
        )
    return Notice(title.strip(), paragraphs, hashlib.sha256(data).hexdigest())


class NoticeFile:
    """The notice at ``path``, read again only when the file changes; None while there is no
    file (the portal's pages then take no new consent)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._notice: Notice | None = None

    def current(self) -> Notice | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen = self._notice = None
            return None
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            self._notice = parse_notice(self.path.read_bytes(), str(self.path))
            self._seen = seen
        return self._notice
