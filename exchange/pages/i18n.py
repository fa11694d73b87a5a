"""The pages' languages: Chinese first (zh-CN), English as a switch. Strings are English message
ids in the templates; their translations live in gettext catalogs (``locale/<lang>/LC_MESSAGES/
messages.po``), compiled in memory when the pages start, so there is no build step."""

from __future__ import annotations

import gettext
import io
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).with_name("locale")
LANGUAGES = {"zh-CN": "zh_CN", "en": "en"}  # the page's lang attribute -> its catalog
DEFAULT = "zh-CN"
LANG_COOKIE = "hie_lang"


@cache
def translations(lang: str) -> gettext.NullTranslations:
    """The compiled catalog of a language (English is the message ids themselves)."""
    folder = LANGUAGES.get(lang)
    path = LOCALE_DIR / str(folder) / "LC_MESSAGES" / "messages.po"
    if folder is None or not path.is_file():
        return gettext.NullTranslations()
    with path.open("rb") as f:
        catalog = read_po(f, locale=folder)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def chosen(query: str | None, cookie: str | None) -> str:
    """The language asked for (``?lang=`` first, then the cookie), else Chinese."""
    for asked in (query, cookie):
        if asked in LANGUAGES:
            return str(asked)
    return DEFAULT


def N_(message: str) -> str:
    """Marks a string for the catalogs; it is translated where it is shown."""
    return message
