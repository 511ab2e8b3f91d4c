"""The sans-IO core driven by a plain blocking socket: no event loop at all.

The core turns commands into bytes and bytes into replies; this loop only moves
bytes. With PIPELINING, MAIL, RCPT and DATA go out in one write.

    python examples/sansio_blocking_socket.py HOST PORT
"""

from __future__ import annotations

import socket
import sys

from aiosmtp.protocol import (
    NEED_DATA,
    Command,
    Reply,
    SMTPConnection,
    parse_ehlo_features,
)


def read_reply(sock: socket.socket, conn: SMTPConnection) -> Reply:
    while True:
        reply = conn.next_reply()
        if reply is not NEED_DATA:
            return reply
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        conn.receive_data(data)


def send_mail(host: str, port: int, sender: str, recipients: list[str], body: bytes) -> Reply:
    conn = SMTPConnection()
    with socket.create_connection((host, port), timeout=30) as sock:
        greeting = read_reply(sock, conn)
        print("greeting:", greeting)

        sock.sendall(conn.send(Command.make("EHLO", "client.example")))
        features = parse_ehlo_features(read_reply(sock, conn).message)

        group = [
            Command.make("MAIL", f"FROM:<{sender}>"),
            *(Command.make("RCPT", f"TO:<{rcpt}>") for rcpt in recipients),
            Command.make("DATA"),
        ]
        if "pipelining" in features:
            sock.sendall(conn.send_many(group))
            replies = [read_reply(sock, conn) for _ in group]
        else:
            replies = []
            for command in group:
                sock.sendall(conn.send(command))
                replies.append(read_reply(sock, conn))
        print("envelope replies:", [reply.code for reply in replies])
        if replies[-1].code != 354:
            raise RuntimeError(f"DATA refused: {replies[-1]}")

        sock.sendall(conn.send_data(body) + conn.end_data())
        final = read_reply(sock, conn)
        print("message:", final)

        sock.sendall(conn.send(Command.make("QUIT")))
        print("quit:", read_reply(sock, conn))
        return final


if __name__ == "__main__":
    send_mail(
        sys.argv[1],
        int(sys.argv[2]),
        "sender@example.com",
        ["recipient@example.com"],
        b"Subject: sans-IO\n\nNo event loop was harmed.\n.\n",
    )
