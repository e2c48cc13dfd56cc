"""Headers every response carries, so that browsers keep the service's pages to themselves.

- `X-Content-Type-Options: nosniff`: a CSV or JSON body is never run as a script or page;
- `X-Frame-Options: DENY`: no other site frames a page to trick clicks on it;
- on HTML, a `Content-Security-Policy` that allows only what the pages are made of: inline
  styles, inline SVG figures and `data:` images; no script, nothing from elsewhere. The API
  documentation pages (Swagger UI, ReDoc) run scripts from a CDN and are left out.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
ALWAYS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}


class SecurityHeaders:
    """ASGI middleware adding the headers above; `unpoliced` paths get no CSP."""

    def __init__(self, app: ASGIApp, unpoliced: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.unpoliced = unpoliced

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        police = scope["path"] not in self.unpoliced

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS.items():
                    headers[name] = value
                html = headers.get("content-type", "").startswith("text/html")
                if html and police:
                    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            await send(message)

        await self.app(scope, receive, send_with_headers)
