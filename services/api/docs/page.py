"""The HTML documentation: Redoc's standalone bundle (vendored in static/, its version and
licence in static/README.md) rendering the OpenAPI document this gateway generates. The page,
the bundle and the document all come from this origin, so the page works offline, and its CSP
lets scripts come from here only. Redoc's styled components write <style> elements, so styles
may be inline (a nonce would not do: browsers hide it from the script that would pass it on)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from services.api.docs.openapi import TITLE

PAGE_PATH = "/api-docs"
BUNDLE_PATH = "/api-docs/redoc.standalone.js"
OPENAPI_PATH = "/api/v1/openapi.json"
POSTMAN_PATH = "/api/v1/postman.json"
REDOC_BUNDLE = Path(__file__).with_name("static") / "redoc.standalone.js"

# Redoc's search runs in a worker it starts from a blob: of its own code. Its sidebar credit shows
# an image from Redocly's CDN: img-src keeps it from being fetched (the browser logs the blocked
# load and Redoc leaves the image out).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "worker-src blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

# The system's fonts: Redoc's own (Montserrat, Roboto) would have to be fetched.
_SANS = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
_THEME = {
    "typography": {
        "fontFamily": _SANS,
        "headings": {"fontFamily": _SANS},
        "code": {"fontFamily": "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"},
    }
}
_HEADER_HEIGHT = 44

_STYLE = f"""
body{{margin:0}}
body>header{{position:fixed;top:0;left:0;right:0;z-index:10;height:{_HEADER_HEIGHT}px;
box-sizing:border-box;padding:0 20px;display:flex;gap:20px;align-items:center;
background:#263238;color:#fff;font:15px/1.4 {_SANS}}}
body>header a{{color:#b3e5fc}}
redoc{{display:block;padding-top:{_HEADER_HEIGHT}px}}
"""


def _attribute(value: str) -> str:
    return html.escape(value, quote=True)


PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{html.escape(TITLE)}</title>
<link rel="icon" href="data:,">
<style>{_STYLE}</style>
</head>
<body>
<header><strong>{html.escape(TITLE)}</strong>
<a href="{OPENAPI_PATH}">OpenAPI 3.0 document</a>
<a href="{POSTMAN_PATH}">Postman collection</a>
<a href="/embed/try">Try it live</a></header>
<redoc spec-url="{OPENAPI_PATH}" scroll-y-offset="body > header" required-props-first
 expand-responses="200,201" theme="{_attribute(json.dumps(_THEME))}"></redoc>
<script src="{BUNDLE_PATH}"></script>
</body>
</html>
"""
