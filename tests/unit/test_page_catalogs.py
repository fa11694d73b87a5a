"""Every string the pages show has its Chinese translation (the pages are Chinese first), and
the catalog holds no translation of a string no page shows any more."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir

from exchange.pages.i18n import LOCALE_DIR, translations

PAGES = Path(__file__).resolve().parents[2] / "exchange" / "pages"
KEYWORDS = {"_": None, "N_": None, "gettext": None}


def shown() -> set[str]:
    found: set[str] = set()
    for method, pattern in (("jinja2", "**.html"), ("python", "**.py")):
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(PAGES), method_map=[(pattern, method)], keywords=KEYWORDS
        ):
            found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_string_a_page_shows_is_translated_into_chinese() -> None:
    messages = shown()
    assert "Find a patient" in messages and "Resident ID" in messages  # both kinds extracted
    chinese = translations("zh-CN")
    missing = sorted(m for m in messages if chinese.gettext(m) == m)
    assert missing == [], missing


def test_the_catalog_translates_only_what_is_shown() -> None:
    po = (LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po").read_text(encoding="utf-8")
    ids = {
        line.removeprefix('msgid "').removesuffix('"')
        for line in po.splitlines()
        if line.startswith('msgid "') and line != 'msgid ""'
    }
    # Refusal messages of the gate are translated by their English text: allowed too.
    from exchange.api.gate import NOT_PERMITTED

    unused = sorted(
        ids - shown() - {NOT_PERMITTED, "the form is stale or not this site's: sign in again"}
    )
    assert unused == [], unused
