"""How a page shows the gate's refusal: a caller who is not signed in (or whose token has
expired or been revoked) goes to the sign-in page; anyone else gets a page saying what they can
do — ask for consent, break the glass in an emergency — never what the record holds."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from exchange.api.responses import Refused
from exchange.pages.i18n import LANG_COOKIE, N_, chosen, translations
from exchange.pages.render import page

TITLES = {
    400: N_("The request could not be understood"),
    403: N_("Not permitted"),
    404: N_("Not found"),
    503: N_("The exchange cannot answer now"),
}
REFUSED = N_("The request was refused")


def refusal_page(key: bytes) -> Callable[[Refused, str, Request], Response]:
    def render(refused: Refused, request_id: str, request: Request) -> Response:
        if refused.status == 401:
            return RedirectResponse("/app/login", 303)
        lang = chosen(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))
        _ = translations(lang).gettext
        actions: list[tuple[str, str]] = []
        pid = request.path_params.get("pid")
        if refused.code == "access.not_permitted" and pid:
            actions += [
                (f"/app/patients/{pid}/break-glass", _("In an emergency: break the glass")),
                ("/app/", _("Find another patient")),
            ]
        return page(
            request,
            "refused.html",
            key,
            refused.status,
            title=_(TITLES.get(refused.status, REFUSED)),
            message=_(refused.message),  # the known refusals have their translations
            request_id=request_id,
            actions=actions,
        )

    return render
