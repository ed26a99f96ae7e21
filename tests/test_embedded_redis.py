import socket

import pytest

from router.embedded_redis import RedisServer, RedisServerError


def test_starts_answers_and_cleans_up(redis_server: RedisServer) -> None:
    with socket.create_connection((redis_server.host, redis_server.port), timeout=2) as s:
        s.sendall(b"SET k v\r\nGET k\r\n")
        data = b""
        while not data.endswith(b"v\r\n"):
            data += s.recv(64)
    assert data == b"+OK\r\n$1\r\nv\r\n"


def test_stop_removes_directory_and_process() -> None:
    server = RedisServer().start()
    directory, proc = server._dir, server.proc
    server.stop()
    assert proc is not None and proc.poll() is not None
    import os

    assert directory is not None and not os.path.exists(directory)


def test_missing_binary_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RedisServerError):
        RedisServer(binary=str(tmp_path / "nope")).start()
