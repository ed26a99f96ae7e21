"""gzip/deflate bodies, bounded after decompression (OCPP-S 1.6 §2: request
and response bodies may be compressed)."""

from __future__ import annotations

import zlib


class BodyTooLarge(ValueError):
    """A body over the limit, before or after decompression (HTTP 413)."""


def inflate(data: bytes, encoding: str, limit: int) -> bytes:
    """Decode a ``Content-Encoding`` of ``identity``, ``gzip``/``x-gzip`` or
    ``deflate`` (zlib-wrapped, or raw as some clients send it).

    Raises:
        BodyTooLarge: more than ``limit`` bytes once decoded (a zip bomb stops
            at the limit: never more than ``limit`` bytes are produced).
        ValueError: an unknown coding or corrupt data.
    """
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        if len(data) > limit:
            raise BodyTooLarge("body too large")
        return data
    if enc in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":
        # RFC 9110 §8.4.1.2 says zlib format; some clients send raw deflate.
        wbits = zlib.MAX_WBITS if data[:1] and (data[0] & 0x0F) == 8 else -zlib.MAX_WBITS
    else:
        raise ValueError(f"unsupported content coding {enc[:20]!r}")
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error:
        raise ValueError("corrupt compressed body") from None
    if len(out) > limit:
        raise BodyTooLarge("body too large once decompressed")
    if not d.eof:
        raise ValueError("truncated compressed body")
    return out
