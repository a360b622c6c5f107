"""The web console: static files served at ``/`` (the page) and ``/console/`` (its scripts,
styles and the vendored chart library), beside the REST API on the same port.

The console is plain HTML, JavaScript and CSS that call the REST API with the key the user signs
in with; nothing here knows a key. Every answer carries a Content-Security-Policy that allows
only this origin's own scripts and styles, so a value that slipped through unescaped still could
not run.
"""

from __future__ import annotations

import os
import re

from twisted.web import pages, resource, static

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                b"connect-src 'self'%s; font-src 'self'; base-uri 'none'; form-action 'self'; "
                                b"frame-ancestors 'none'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-cache",
}


class _Files(static.File):
    """The console's files; no directory listings."""

    def directoryListing(self):
        return pages.notFound()


class Root(resource.Resource):
    """``/`` is the console's page, ``/console/...`` its files, the paths in ``sockets`` (path ->
    resource) their WebSocket; every other path goes to ``api``."""

    def __init__(self, api, sockets=None):
        super().__init__()
        self.api = api
        self.sockets = sockets or {}
        self.page = _Files(os.path.join(STATIC, "index.html"), defaultType="text/html")
        self.files = _Files(STATIC)

    def getChildWithDefault(self, name, request):
        socket = self.sockets.get(request.path)
        if socket is not None and request.method == b"GET":
            return socket
        if request.path in (b"/", b"/index.html") and request.method in (b"GET", b"HEAD"):
            _secure(request)
            return self.page
        if name == b"console" and request.method in (b"GET", b"HEAD"):
            _secure(request)
            return self.files
        return self.api


_HOST = re.compile(rb"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def _secure(request):
    """The security headers; connect-src names this host's own ws: and wss: origin too (the live
    subscriptions), taken from a Host header of a plain host name or address only."""
    host = request.getHeader(b"host") or b""
    origin = b" ws://%s wss://%s" % (host, host) if _HOST.fullmatch(host) else b""
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value % origin if name == b"content-security-policy" else value)
