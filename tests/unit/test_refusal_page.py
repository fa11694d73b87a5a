"""A refusal on a Chinese page says what it means in Chinese: a message the catalogs hold is
translated; one that carries a field or a value (the API's English) is shown as its code's
meaning, with the exchange's own words beneath as the detail; English pages show the message
as it is; a caller not signed in goes to sign in."""

from __future__ import annotations

from starlette.requests import Request

from exchange.api.gate import NOT_PERMITTED
from exchange.api.responses import Refused
from exchange.pages.i18n import translations
from exchange.pages.refusals import BY_CODE, meaning, refusal_page

RENDER = refusal_page(b"k" * 32)


def request(lang: str | None = None, path: str = "/app/audit/events") -> Request:
    query = f"lang={lang}".encode() if lang else b""
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": query,
            "headers": [],
            "path_params": {},
        }
    )


def shown(refused: Refused, lang: str | None = None) -> str:
    return bytes(RENDER(refused, "req-1", request(lang)).body).decode()


def test_a_message_with_a_field_in_it_is_shown_by_its_meaning_and_the_detail_kept() -> None:
    bad = Refused(400, "search.date", "a date-time in a search needs a timezone offset", "invalid")
    page = shown(bad)
    assert "查询条件中有字段的格式不正确。" in page
    assert '<span lang="en">a date-time in a search needs a timezone offset</span>' in page
    english = shown(bad, "en")
    assert "a date-time in a search needs a timezone offset" in english
    assert "Detail from the exchange" not in english


def test_a_message_the_catalog_holds_is_translated_without_a_detail() -> None:
    page = shown(Refused(403, "access.not_permitted", NOT_PERMITTED))
    assert translations("zh-CN").gettext(NOT_PERMITTED) in page
    assert "平台返回的详细信息" not in page


def test_a_role_refusal_names_no_role_but_keeps_it_as_detail() -> None:
    page = shown(Refused(403, "role.not_permitted", "the nurse role does not read referrals"))
    assert "您的角色无权使用此页面。" in page and "the nurse role does not read referrals" in page


def test_every_meaning_is_translated_and_codes_resolve_by_family() -> None:
    chinese = translations("zh-CN")
    assert all(chinese.gettext(m) != m for m in BY_CODE.values())
    assert meaning("search.paging") == BY_CODE["search."]
    assert meaning("proof.beyond_head") == BY_CODE["proof."]
    assert meaning("role.not_permitted") == BY_CODE["role.not_permitted"]
    assert meaning("merge.decision") is None  # no page meets it: its message as it is


def test_a_caller_not_signed_in_goes_to_sign_in() -> None:
    answer = RENDER(Refused(401, "token.expired", "the token has expired", "login"), "r", request())
    assert answer.status_code == 303 and answer.headers["location"] == "/app/login"
