# Incremental UTF-8 validation (RFC 3629 §4, the well-formed byte sequences
# table), used for text messages and close reasons (RFC 6455 §8.1).
#
# The state fits in a uint32 so a message split over frames and reads is
# validated as it arrives (fail fast, Autobahn case group 6):
#   0                    between characters
#   need << 16 | hi << 8 | lo
#                        `need` continuation bytes missing; the next one must
#                        be in lo..hi (this excludes overlongs, surrogates and
#                        code points above U+10FFFF)
#   UTF8_REJECT          invalid

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef enum:
    UTF8_REJECT = 0xFFFFFFFF


cdef inline uint32_t _utf8_lead(uint8_t c) noexcept nogil:
    # The state after lead byte c, or UTF8_REJECT.
    if c < 0xC2:
        return UTF8_REJECT          # continuation byte or overlong C0/C1
    if c < 0xE0:
        return (1 << 16) | (0xBF << 8) | 0x80
    if c < 0xF0:
        if c == 0xE0:
            return (2 << 16) | (0xBF << 8) | 0xA0    # no overlongs
        if c == 0xED:
            return (2 << 16) | (0x9F << 8) | 0x80    # no surrogates
        return (2 << 16) | (0xBF << 8) | 0x80
    if c < 0xF5:
        if c == 0xF0:
            return (3 << 16) | (0xBF << 8) | 0x90    # no overlongs
        if c == 0xF4:
            return (3 << 16) | (0x8F << 8) | 0x80    # <= U+10FFFF
        return (3 << 16) | (0xBF << 8) | 0x80
    return UTF8_REJECT


cdef uint32_t utf8_step(uint32_t st, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Advance the validator over n bytes; 0 means "complete and valid so far"."""
    cdef Py_ssize_t i = 0
    cdef uint64_t w, w1, w2, w3
    cdef uint8_t c
    cdef uint32_t need
    if st == UTF8_REJECT:
        return st
    while i < n:
        if st == 0:
            # Speed trick: skip ASCII 8 bytes per step (OCPP-J is JSON, mostly
            # ASCII); memcpy compiles to one unaligned load.
            while i + 32 <= n:
                memcpy(&w, p + i, 8)
                memcpy(&w1, p + i + 8, 8)
                memcpy(&w2, p + i + 16, 8)
                memcpy(&w3, p + i + 24, 8)
                if (w | w1 | w2 | w3) & 0x8080808080808080ULL:
                    break
                i += 32
            while i + 8 <= n:
                memcpy(&w, p + i, 8)
                if w & 0x8080808080808080ULL:
                    break
                i += 8
            if i >= n:
                break
            c = p[i]
            i += 1
            if c < 0x80:
                continue
            st = _utf8_lead(c)
            if st == UTF8_REJECT:
                return st
        else:
            c = p[i]
            i += 1
            if c < (st & 0xFF) or c > ((st >> 8) & 0xFF):
                return UTF8_REJECT
            need = (st >> 16) - 1
            st = 0 if need == 0 else ((need << 16) | (0xBF << 8) | 0x80)
    return st


def validate_utf8(data):
    """True if ``data`` is complete, valid UTF-8 (the codec's validator).

    Args:
        data: bytes-like.
    """
    cdef const uint8_t[::1] v = data
    return utf8_step(0, &v[0] if len(v) else NULL, len(v)) == 0
