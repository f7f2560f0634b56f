"""The listening socket ``duly serve`` binds: answers on kept-alive connections are not held back.

asyncio turns Nagle's algorithm off (``TCP_NODELAY``) only on accepted sockets whose protocol
is TCP; a socket made with protocol 0 left it on, and every answer after the first on a
connection then waited ~40 ms for the client's delayed ACK.
"""

from __future__ import annotations

import asyncio
import socket

from duly.cli.serve import _bind


async def test_connections_accepted_on_the_bound_socket_have_nagle_off() -> None:
    sock = _bind("127.0.0.1", 0)
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = writer.get_extra_info("socket")
        seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accepted, sock=sock)
    host, port = sock.getsockname()[:2]
    _, writer = await asyncio.open_connection(host, port)
    try:
        nodelay = await asyncio.wait_for(seen, 5)
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    assert nodelay != 0
