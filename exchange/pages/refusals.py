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
    409: N_("The page is out of date"),
    503: N_("The exchange cannot answer now"),
}
REFUSED = N_("The request was refused")
# What a refusal a page can meet means, by its code, for those whose English message carries
# what a catalog cannot hold (a role, a field, a value): the page shows this in the person's
# language and the exchange's own message beneath it, in English, as the detail. A code's
# family (``search.``) stands for every code in it.
BY_CODE = {
    "role.not_permitted": N_("Your role may not use this page."),
    "purpose.missing": N_("This page was opened without a purpose of use it serves."),
    "patient.not_found": N_("The exchange knows no patient by this id."),
    "break_glass.invalid": N_(
        "Emergency access needs one of the reason codes and a written reason."
    ),
    "referral.not_found": N_("No referral with this id involves your institution."),
    "review.not_found": N_("No break-glass grant is recorded under that number."),
    "review.invalid": N_("Say whether the access was justified, and write why."),
    "audit.no_head": N_("The audit log has no signed head yet: try again in a few seconds."),
    "breach.params": N_("Give a person or a token, and the days to search."),
    "portal.unavailable": N_(
        "The consent could not be confirmed: look at your consents before trying again."
    ),
    "consent.": N_("The exchange could not record this consent."),
    "search.": N_("A field of the search is not in a form the exchange reads."),
    "proof.": N_("The check could not be made with these numbers."),
}


def meaning(code: str) -> str | None:
    """What the code means, in a message id of the catalogs, if a page can meet it."""
    if code in BY_CODE:
        return BY_CODE[code]
    family = code.partition(".")[0] + "."
    return BY_CODE.get(family)


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
        elif refused.code.startswith("page.consent") and pid:  # the consent form, shown again
            actions.append((f"/app/patients/{pid}/consents", _("Back to my consents")))
        # A message the catalogs hold (the gate's, the pages' own) is shown translated; else
        # what its code means, with the exchange's message as the detail (English).
        message, detail = _(refused.message), None
        if message == refused.message and lang != "en" and (known := meaning(refused.code)):
            message, detail = _(known), refused.message
        return page(
            request,
            "refused.html",
            key,
            refused.status,
            title=_(TITLES.get(refused.status, REFUSED)),
            message=message,
            detail=detail,
            request_id=request_id,
            actions=actions,
        )

    return render
