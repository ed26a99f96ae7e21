# Client-to-server masking (RFC 6455 §5.3): payload[i] ^ key[i % 4].
#
# Speed trick: the 4-byte key is repeated into a uint64 and XORed 8 bytes per
# step; memcpy compiles to unaligned loads/stores (x86-64, arm64), and the
# compiler vectorises the loop further at -O2/-O3. dst may equal src (in place).

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy


cdef inline void unmask_copy(uint8_t* dst, const uint8_t* src, Py_ssize_t n,
                             const uint8_t* key, uint8_t off) noexcept nogil:
    """dst[i] = src[i] ^ key[(off + i) % 4] for i < n."""
    cdef uint8_t k[8]
    cdef uint64_t k8, w, w1, w2, w3
    cdef Py_ssize_t i = 0
    cdef int j
    for j in range(8):
        k[j] = key[(off + j) & 3]
    memcpy(&k8, k, 8)
    # 32 bytes per iteration: four independent 64-bit XORs the compiler keeps
    # in registers (or turns into two SSE2 ops).
    while i + 32 <= n:
        memcpy(&w, src + i, 8)
        memcpy(&w1, src + i + 8, 8)
        memcpy(&w2, src + i + 16, 8)
        memcpy(&w3, src + i + 24, 8)
        w ^= k8
        w1 ^= k8
        w2 ^= k8
        w3 ^= k8
        memcpy(dst + i, &w, 8)
        memcpy(dst + i + 8, &w1, 8)
        memcpy(dst + i + 16, &w2, 8)
        memcpy(dst + i + 24, &w3, 8)
        i += 32
    while i + 8 <= n:
        memcpy(&w, src + i, 8)
        w ^= k8
        memcpy(dst + i, &w, 8)
        i += 8
    while i < n:
        dst[i] = src[i] ^ k[i & 7]
        i += 1


def mask(data, key):
    """XOR ``data`` with the 4-byte ``key`` (client-side masking, for tests).

    Args:
        data: payload (bytes-like).
        key: the 4-byte masking key.

    Raises:
        ValueError: the key is not 4 bytes long.
    """
    cdef const uint8_t[::1] v = data
    cdef const uint8_t[::1] kv = key
    cdef bytes out
    if len(kv) != 4:
        raise ValueError("the masking key has 4 bytes")
    out = PyBytes_FromStringAndSize(NULL, len(v))
    if len(v):
        unmask_copy(<uint8_t*>PyBytes_AS_STRING(out), &v[0], len(v), &kv[0], 0)
    return out
