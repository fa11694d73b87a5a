"""Signing in to the pages, signing out, and the HIS launch.

- ``GET /app/login`` asks for a token: the exchange's own (``hie token``) or a member
  hospital's login token, as the API takes them. ``POST /app/login`` checks it with the API's
  authenticator and keeps it in the session cookie (exchange/pages/session.py). Each attempt
  is in the audit log (``page.sign_in``, permitted or refused), with no token in it.
- ``POST /app/logout`` (with the CSRF token) clears the cookie.
- ``POST /app/launch`` is the HIS's "调阅" button: the hospital system posts the physician's
  token and the patient's identifier (``identifier=<system>|<value>``), and the physician lands
  on that patient's record. The lookup goes through the gate as the API's patient search does
  (``page.launch``: the same role, purpose and decision, audited), and no resident ID ever
  appears in an address: the record page is named by the patient's regional id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from exchange.api.access import Access, Answer, Call
from exchange.api.context import ApiContext
from exchange.api.gate import Gate
from exchange.api.patients import LOOKUP, PatientRoutes
from exchange.auth.tokens import TokenError
from exchange.pages.calls import body_of
from exchange.pages.i18n import LANG_COOKIE, chosen, translations
from exchange.pages.render import page
from exchange.pages.session import CSRF_FIELD, csrf_valid, form_of, sign_in, sign_out

LAUNCH = Access(
    "page.launch",
    roles=LOOKUP.roles,
    refused_role=LOOKUP.refused_role,
    purposes=LOOKUP.purposes,
    refused_purpose=LOOKUP.refused_purpose,
    defaults={"physician": "TREAT"},
    page=True,
)


class SignIn:
    def __init__(self, ctx: ApiContext, gate: Gate) -> None:
        self.ctx, self.gate = ctx, gate
        self.search = PatientRoutes(ctx).patient_search

    async def login_page(self, request: Request) -> Response:
        return page(request, "login.html", self.ctx.page_key)

    async def login(self, request: Request) -> Response:
        token = (await form_of(request)).get("token", "").strip()
        now = self.ctx.clock()
        try:
            ident = await self.ctx.tokens.authenticate(token, now=now)
        except TokenError as exc:
            await self._audit(request, None, "deny", exc.code)
            _ = translations(_lang(request)).gettext
            problem = _("The token was not accepted: it may have expired or been revoked.")
            return page(request, "login.html", self.ctx.page_key, 401, problem=problem)
        await self._audit(request, ident, "permit", "sign_in.token")
        response = RedirectResponse("/app/", 303)
        sign_in(response, request, token, ident.expires_at, now)
        return response

    async def logout(self, request: Request) -> Response:
        form = await form_of(request)
        response = RedirectResponse("/app/login", 303)
        if csrf_valid(self.ctx.page_key, request, form.get(CSRF_FIELD)):
            sign_out(response, request)
        return response

    async def launch(self, request: Request) -> Response:
        """The HIS's launch: the lookup through the gate as the physician, then their session."""
        form = await form_of(request)
        token = form.get("token", "").strip()
        scope = dict(request.scope)
        scope["headers"] = [
            (k, v) for k, v in request.scope["headers"] if k not in (b"authorization", b"cookie")
        ] + [(b"authorization", f"Bearer {token}".encode())]
        body = urlencode({"identifier": form.get("identifier", "")}).encode()
        looked_up = Request(scope, _once(body))
        response = await self.gate.serve(LAUNCH, self._found, looked_up)
        target = response.headers.get("location", "")
        if response.status_code != 303 or not target.startswith("/app/patients/"):
            return response  # refused (a page saying why) or not found
        # The HIS's POST came from another site: a SameSite=Strict cookie set on it is not
        # sent along a redirect it started. A page of this site moves on, and takes it.
        arrived = page(request, "launched.html", self.ctx.page_key, target=target)
        ident = await self.ctx.tokens.authenticate(token, now=self.ctx.clock())
        sign_in(arrived, request, token, ident.expires_at, self.ctx.clock())
        return arrived

    async def _found(self, call: Call) -> Answer:
        return to_record(await self.search(call))

    async def _audit(self, request: Request, ident: Any, decision: str, code: str) -> None:
        record = {
            "action": "page.sign_in",
            "route": request.url.path,
            "person": ident.person if ident else None,
            "role": ident.role if ident else None,
            "institution": ident.institution if ident else None,
            "token_id": ident.token_id if ident else None,
            "decision": decision,
            "reasons": [{"code": code, "message": "page sign-in"}],
            "source": request.client.host if request.client else None,
        }
        await self.ctx.audit_writer.append(record, self.ctx.clock())


def to_record(answer: Answer) -> Answer:
    """The API's patient search answered as a page: on to the record found, or back to the
    search saying none was (not permitted looks the same; the audit says which)."""
    found = body_of(answer).get("entry") or []
    target = f"/app/patients/{found[0]['resource']['id']}" if found else "/app/?found=none"
    return Answer(
        RedirectResponse(target, 303),
        answer.decision,
        patient_id=answer.patient_id,
        disclosed=answer.disclosed,
    )


def _lang(request: Request) -> str:
    return chosen(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))


def _once(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def sign_in_routes(ctx: ApiContext, gate: Gate) -> list[Route]:
    s = SignIn(ctx, gate)
    return [
        Route("/app/login", s.login_page, methods=["GET"]),
        Route("/app/login", s.login, methods=["POST"]),
        Route("/app/logout", s.logout, methods=["POST"]),
        Route("/app/launch", s.launch, methods=["POST"]),
    ]
