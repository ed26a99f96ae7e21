# The HTTP/1.1 upgrade (RFC 6455 §4.2): request parsing with httptools
# (llhttp) up to the end of the headers only, validation, and the 101 / error
# responses. Runs once per connection, so plain Python objects are fine here.

import base64
import binascii
import hashlib

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from router.ws.errors import (
    BadRequest,
    HeadersTooLarge,
    MethodNotAllowed,
    UnsupportedVersion,
)

# RFC 6455 §1.3: the GUID appended to Sec-WebSocket-Key.
cdef bytes _WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_REASONS = {
    101: "Switching Protocols", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 426: "Upgrade Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable",
}


cdef inline bint _has_token(object value, str token):
    # Comma-separated, case-insensitive token lists (RFC 9110 §5.6.1).
    if value is None:
        return False
    for part in (<str>value).split(","):
        if part.strip().lower() == token:
            return True
    return False


def accept_key(str key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2 step 5.4).

    Args:
        key: the client's Sec-WebSocket-Key (base64 of 16 bytes).
    """
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _WS_GUID).digest()).decode()


cdef class UpgradeRequest:

    def __repr__(self):
        return f"<UpgradeRequest {self.method} {self.path!r}>"

    @property
    def headers(self):
        """[(lower-cased name, value)] in request order (a new list per call)."""
        cdef list parts
        if not self._packed_headers:
            return []
        parts = self._packed_headers.split("\0")
        return list(zip(parts[0::2], parts[1::2]))

    def header(self, str name, default=None):
        """The first value of header ``name`` (case-insensitive), or ``default``."""
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default


cdef class HandshakeParser:
    """Incremental parser of one upgrade request.

    ``feed(data)`` returns None until the headers are complete, then the
    validated :class:`UpgradeRequest`; ``leftover`` holds bytes that followed
    the request head (early frames). The parser stops at the end of the headers.
    """
    cdef object _parser
    cdef list _url
    cdef list _headers
    cdef Py_ssize_t _fed
    cdef Py_ssize_t _max_bytes
    cdef Py_ssize_t _max_headers
    cdef Py_ssize_t _header_bytes
    cdef bint _complete
    cdef readonly bytes leftover

    def __init__(self, Py_ssize_t max_header_bytes=8192, Py_ssize_t max_headers=64):
        """Create a parser.

        Args:
            max_header_bytes: largest request head (431 beyond).
            max_headers: most header lines (431 beyond).
        """
        self._parser = HttpRequestParser(self)
        self._url = []
        self._headers = []
        self._max_bytes = max_header_bytes
        self._max_headers = max_headers
        self.leftover = b""

    # httptools callbacks
    def on_url(self, bytes url):
        self._url.append(url)

    def on_header(self, bytes name, bytes value):
        if len(self._headers) >= self._max_headers:
            raise HeadersTooLarge("too many headers")
        # Header values are ISO-8859-1 on the wire (RFC 9110 §5.5).
        self._headers.append((name.decode("latin-1").lower(),
                              value.decode("latin-1").strip()))

    def on_headers_complete(self):
        self._complete = True

    def feed(self, data):
        """Feed bytes; return the request once the head is complete.

        Raises:
            HandshakeError: a subclass with the HTTP status to answer.
        """
        cdef Py_ssize_t offset = -1
        cdef Py_ssize_t n = len(data)
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            offset = upgrade.args[0]
        except HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, HeadersTooLarge):
                raise HeadersTooLarge("too many headers") from None
            raise BadRequest("malformed HTTP request") from None
        if not self._complete:
            self._fed += n
            if self._fed > self._max_bytes:
                raise HeadersTooLarge("request head too large")
            return None
        if offset < 0:
            offset = n
        if self._fed + offset > self._max_bytes:
            raise HeadersTooLarge("request head too large")
        if offset < n:
            self.leftover = bytes(data[offset:])
        return self._request()

    cdef UpgradeRequest _request(self):
        # RFC 6455 §4.2.1, the server's checks in order.
        cdef UpgradeRequest r = UpgradeRequest.__new__(UpgradeRequest)
        cdef dict first = {}
        cdef list protocols = []
        cdef list extensions = []
        p = self._parser
        r.method = p.get_method().decode("ascii", "replace")
        r.path = b"".join(self._url).decode("latin-1")
        # NUL cannot occur in a header (llhttp rejects it), so it separates.
        r._packed_headers = "\0".join([x for pair in self._headers for x in pair])
        for name, value in self._headers:
            if name == "sec-websocket-protocol":
                protocols.extend(t.strip() for t in value.split(",") if t.strip())
            elif name == "sec-websocket-extensions":
                extensions.append(value)
            elif name in first:
                if name in ("sec-websocket-key", "sec-websocket-version", "host"):
                    raise BadRequest(f"duplicate {name} header")
            else:
                first[name] = value
        r.subprotocols = protocols
        r.extensions = ", ".join(extensions) if extensions else None
        r.authorization = first.get("authorization")
        r.host = first.get("host")
        if r.method != "GET":
            raise MethodNotAllowed("upgrade request must be GET")
        if p.get_http_version() != "1.1":
            raise BadRequest("HTTP/1.1 required")
        if r.host is None:
            raise BadRequest("missing Host header")
        if not _has_token(first.get("upgrade"), "websocket"):
            raise UnsupportedVersion("not a WebSocket upgrade")
        if not _has_token(first.get("connection"), "upgrade"):
            raise UnsupportedVersion("not a WebSocket upgrade")
        if first.get("sec-websocket-version") != "13":
            raise UnsupportedVersion("Sec-WebSocket-Version must be 13")
        key = first.get("sec-websocket-key")
        if key is None:
            raise BadRequest("missing Sec-WebSocket-Key")
        try:
            raw = base64.b64decode(key.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise BadRequest("invalid Sec-WebSocket-Key") from None
        if len(raw) != 16:
            raise BadRequest("invalid Sec-WebSocket-Key")
        r.key = key
        return r


cdef _check_header(str name, str value):
    # No response splitting: names are tokens, values have no CR/LF/NUL.
    if not name or any(c in name for c in " \t\r\n:\0") or any(c in value for c in "\r\n\0"):
        raise ValueError(f"invalid header {name!r}")


def accept_response(UpgradeRequest request, subprotocol=None, str extensions=None,
                    headers=()):
    """The 101 response (RFC 6455 §4.2.2 step 5).

    Args:
        request: the validated request.
        subprotocol: the chosen subprotocol; must be one the client offered.
        extensions: Sec-WebSocket-Extensions response value, or None.
        headers: extra (name, value) pairs.

    Raises:
        ValueError: subprotocol not offered, or a header with CR/LF.
    """
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Accept: " + accept_key(request.key),
    ]
    if subprotocol is not None:
        if subprotocol not in request.subprotocols:
            raise ValueError("subprotocol was not offered by the client")
        lines.append("Sec-WebSocket-Protocol: " + subprotocol)
    if extensions:
        lines.append("Sec-WebSocket-Extensions: " + extensions)
    for name, value in headers:
        _check_header(name, value)
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_response(int status, headers=(), bytes body=b""):
    """An HTTP error response that closes the connection.

    Args:
        status: 4xx/5xx status code.
        headers: extra (name, value) pairs, e.g. ("Retry-After", "30").
        body: response body.

    Raises:
        ValueError: status not 4xx/5xx, or a header with CR/LF.
    """
    if not 400 <= status <= 599:
        raise ValueError("error status must be 4xx or 5xx")
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if body:
        lines.append("Content-Type: text/plain; charset=utf-8")
    for name, value in headers:
        _check_header(name, value)
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
