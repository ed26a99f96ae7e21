"""Settings of the WebSocket layer (one instance shared by all connections)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WSSettings:
    """Limits and timers for every WebSocket connection of a process.

    The connection glue copies the values it needs on the hot path into C
    fields when a connection is created, so changing settings affects new
    connections only (the instance is frozen anyway).

    Attributes:
        max_message_size: largest message accepted, after reassembly and after
            decompression (bytes); larger closes with 1009.
        max_header_bytes: largest HTTP upgrade request head (request line and
            headers); larger is answered 431.
        max_headers: most header lines in the upgrade request; more is 431.
        handshake_timeout: seconds from TCP accept until the 101 is written
            (slowloris guard); includes the time ``on_request`` takes to decide.
        close_timeout: seconds to wait for the peer's close frame (or for the
            peer to drain our close) before dropping TCP.
        ping_interval: send a ping after this many seconds without receiving
            anything; 0 disables keepalive.
        ping_timeout: seconds to wait for any data after a keepalive ping
            before the connection is considered dead and aborted (1006).
        timer_resolution: period of the process-wide sweep that drives all
            timeouts (seconds); every timeout fires up to this much late.
        permessage_deflate: negotiate RFC 7692 when a client offers it.
        server_max_window_bits: upper bound of the LZ77 window we compress
            with (9..15); the response announces it (RFC 7692 §7.1.2.1).
        client_max_window_bits: upper bound we ask the client to compress with
            (8..15) when it offers ``client_max_window_bits`` (§7.1.2.2).
        server_no_context_takeover: reset our compressor after each message:
            no per-connection compressor state (§7.1.1.1).
        client_no_context_takeover: ask the client to reset its compressor
            after each message, so no per-connection decompressor state is
            kept either (§7.1.1.2).
        compression_threshold: messages shorter than this are sent
            uncompressed (RFC 7692 §6: compression is per message).
        compression_level: zlib level 1..9.
        compression_mem_level: zlib memLevel 1..9 (memory of the compressor is
            ``2**(wbits+2) + 2**(mem_level+9)`` bytes).
        write_high_water: transport write buffer size above which reading from
            the peer pauses (the peer does not read what we send).
        write_low_water: size below which reading resumes.
    """

    max_message_size: int = 1024 * 1024
    max_header_bytes: int = 8192
    max_headers: int = 64
    handshake_timeout: float = 10.0
    close_timeout: float = 5.0
    ping_interval: float = 60.0
    ping_timeout: float = 30.0
    timer_resolution: float = 1.0
    permessage_deflate: bool = True
    server_max_window_bits: int = 12
    client_max_window_bits: int = 12
    server_no_context_takeover: bool = True
    client_no_context_takeover: bool = True
    compression_threshold: int = 128
    compression_level: int = 6
    compression_mem_level: int = 5
    write_high_water: int = 256 * 1024
    write_low_water: int = 64 * 1024

    def __post_init__(self) -> None:
        """Reject settings the codec cannot honour.

        Raises:
            ValueError: a value is out of range.
        """
        if self.max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        if self.max_header_bytes < 256 or self.max_headers < 4:
            raise ValueError("max_header_bytes >= 256 and max_headers >= 4 required")
        # zlib cannot produce a raw deflate stream with an 8-bit window, so
        # our own window is at least 9 (zlib deflateInit2 docs).
        if not 9 <= self.server_max_window_bits <= 15:
            raise ValueError("server_max_window_bits must be in 9..15")
        if not 8 <= self.client_max_window_bits <= 15:
            raise ValueError("client_max_window_bits must be in 8..15")
        if not 1 <= self.compression_level <= 9 or not 1 <= self.compression_mem_level <= 9:
            raise ValueError("compression_level and compression_mem_level must be in 1..9")
        if self.handshake_timeout <= 0 or self.close_timeout <= 0 or self.timer_resolution <= 0:
            raise ValueError("timeouts must be positive")
        if self.ping_interval < 0 or (self.ping_interval > 0 and self.ping_timeout <= 0):
            raise ValueError("ping_interval >= 0 and ping_timeout > 0 required")
        if not 0 <= self.write_low_water <= self.write_high_water:
            raise ValueError("0 <= write_low_water <= write_high_water required")
