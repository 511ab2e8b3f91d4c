"""SMTP, SMTP_SSL and LMTP: smtplib's surface, driving the sans-IO core over anyio.

Theory of operation: every public coroutine takes the connection lock for its whole
duration (``sendmail`` for the whole transaction), so tasks sharing one client
never interleave their commands. Commands are turned into bytes by the core
*before* any I/O, so bad arguments fail with nothing sent; from the first byte
written until the last reply read, any failure (timeout, cancellation, a lost
connection, nonsense from the server) closes the connection in ``_io_guard``,
because a session whose replies may still be in flight can never be trusted to be
in step again.
"""

from __future__ import annotations

import contextlib
import datetime
import email.message
import logging
import socket
import ssl
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import ClassVar

import anyio

from ._auth import TokenSource, choose_oauth_mechanism, oauth_login, scram_login
from ._body import CHUNK_SIZE, READ_SIZE, BytesBody, MessageBody, MessageSource, as_body
from ._mailopts import NO_EXTRAS, MailExtras, plan_parameters
from ._proxy import parse_proxy
from ._transport import Transport
from .errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPDataError,
    SMTPDeliveryUnknownError,
    SMTPDeliveryUnknownResponseError,
    SMTPDeliveryUnknownTimeoutError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupportedError,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from .hooks import Hooks, call_hook, command_sent, message_envelope, observe_message
from .message import address_only, flatten_message, quote_address
from .protocol import (
    DSN,
    NEED_DATA,
    PASSWORD_MECHANISMS,
    SCRAM_MECHANISMS,
    Command,
    LineEndingNormalizer,
    LocalProtocolError,
    RemoteProtocolError,
    Reply,
    SASLprepError,
    SMTPConnection,
    State,
    choose_password_mechanisms,
    cram_md5_response,
    decode_challenge,
    encode_response,
    login_response,
    parse_ehlo_features,
    plain_response,
    tls_server_end_point,
)

__all__ = ["LMTP", "LMTP_PORT", "SMTP", "SMTP_PORT", "SMTP_SSL", "SMTP_SSL_PORT", "SendResult"]

SMTP_PORT = 25
SMTP_SSL_PORT = 465
LMTP_PORT = 2003

# smtplib's bound on AUTH challenges before it calls the exchange a loop.
_MAX_CHALLENGES = 5
# Commands per pipelined write. Reading the replies of each group before writing
# the next keeps both directions far below any socket buffer, so a large recipient
# list can never deadlock client and server on full buffers (API.md, RFC 2920 3.1).
_PIPELINE_GROUP = 100
# A body up to this size goes out in one write with the final dot.
_COALESCE_LIMIT = 65536
# The largest single write; larger payloads are sliced (without copying).
_WRITE_SLICE = 262144

_DATA = Command.make("DATA")
_RSET = Command.make("RSET")

logger = logging.getLogger("aiosmtp.protocol")

AuthObject = Callable[..., "str | bytes | None"]
ProgressCallback = Callable[[int], object]


class _Transaction:
    """What one ``sendmail`` has done so far: what a failure of it means depends on
    it. Each transaction has its own, because under the pool's overlap the next one
    starts while this one still waits for its reply."""

    __slots__ = ("delivery_pending", "end_of_data_sent", "handed_off", "on_handoff")

    def __init__(self, on_handoff: Callable[[], object] | None = None) -> None:
        #: Set by SMTPPool: pass the connection lock on to the next transaction as
        #: soon as the final dot has left (RFC 2920 section 3.1 lets the next MAIL
        #: follow it at once), then call this.
        self.on_handoff = on_handoff
        #: The end of the data (final dot or BDAT LAST) has left.
        self.end_of_data_sent = False
        #: Between the end of the data and its reply: the outcome is not known.
        self.delivery_pending = False
        #: The connection lock was passed on before the reply to the data came.
        self.handed_off = False


class _IOGuard:
    """``SMTP._io_guard()``: deadlines for each operation; on any failure the
    connection is aborted and the exception translated. A class rather than a
    generator, because it wraps every exchange of every message."""

    __slots__ = ("_client", "_deadlines", "_tx")

    def __init__(self, client: SMTP) -> None:
        self._client = client
        # The transaction of the task that opened the block, even if another one
        # starts on the connection meanwhile.
        self._tx = client._tx

    async def __aenter__(self) -> None:
        transport, _ = self._client._connection()
        self._deadlines = transport.deadlines()
        self._deadlines.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failure = exc
        try:
            self._deadlines.__exit__(exc_type, exc, tb)
        except SMTPTimeoutError as timeout:
            failure = timeout
        if failure is None:
            return
        client, tx = self._client, self._tx
        if isinstance(failure, RemoteProtocolError):
            delivery_pending, tx.delivery_pending = tx.delivery_pending, False
            await client._abort()
            if delivery_pending:
                # Nonsense where the verdict on a message sent in full should be.
                raise SMTPDeliveryUnknownResponseError(
                    failure.code,
                    f"{failure}; the message had been sent in full, so it may have been delivered",
                ) from failure
            raise SMTPResponseException(failure.code, str(failure)) from failure
        await client._abort()
        if tx.delivery_pending and isinstance(failure, SMTPServerDisconnected):
            tx.delivery_pending = False
            unknown = (
                SMTPDeliveryUnknownTimeoutError
                if isinstance(failure, SMTPTimeoutError)
                else SMTPDeliveryUnknownError
            )
            raise unknown(
                f"{failure}; the message had been sent in full, so it may have been delivered"
            ) from failure
        if failure is not exc:
            raise failure


class SendResult(dict[str, tuple[int, bytes]]):
    """The refused recipients, as smtplib returns them, plus the final reply.

    It equals the plain dict smtplib would return; ``reply`` is the server's last
    answer to the message (usually holding the queue ID).
    """

    reply: Reply

    def __init__(self, refused: dict[str, tuple[int, bytes]], reply: Reply) -> None:
        super().__init__(refused)
        self.reply = reply

    def __repr__(self) -> str:
        return f"SendResult({dict.__repr__(self)}, reply={self.reply!r})"


_default_context: ssl.SSLContext | None = None


async def _default_ssl_context() -> ssl.SSLContext:
    """A verifying context, made once and off the event loop (loading the CA store
    reads files)."""
    global _default_context
    if _default_context is None:
        _default_context = await anyio.to_thread.run_sync(ssl.create_default_context)
    return _default_context


def _local_hostname() -> str:
    # The name to give in EHLO, chosen as smtplib chooses it.
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        address = "127.0.0.1"
    return f"[{address}]"


def _as_bytes(text: str | bytes | None) -> bytes:
    if text is None:
        return b""
    return text if isinstance(text, bytes) else text.encode()


class SMTP:
    """An SMTP client connection, with smtplib's methods as coroutines."""

    default_port: ClassVar[int] = SMTP_PORT
    ehlo_msg: ClassVar[str] = "EHLO"
    _lmtp: ClassVar[bool] = False

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        local_hostname: str | None = None,
        timeout: float | None = 60.0,
        source_address: tuple[str, int] | None = None,
        *,
        context: ssl.SSLContext | None = None,
        chunking: bool = True,
        hooks: Hooks | None = None,
        proxy: str | None = None,
    ) -> None:
        #: The SOCKS or HTTP CONNECT proxy to connect through (see _proxy.py).
        self.proxy = parse_proxy(proxy) if proxy else None
        self._host = host
        self._port = port
        self.local_hostname = local_hostname
        self.timeout = timeout
        self.source_address = source_address
        self.context = context
        #: Send bodies with BDAT (RFC 3030) when the server offers CHUNKING.
        self.chunking = chunking
        #: Told of connections, commands, replies and message outcomes (aiosmtp.hooks).
        self.hooks = hooks
        # When the last command (or the data) left, for Hooks.on_reply's timing.
        self._hook_clock = 0.0
        #: The name to verify in the server's certificate (and send as SNI) when
        #: it is not the host connected to.
        self.server_hostname: str | None = None
        self.debuglevel = 0
        self.helo_resp: bytes | None = None
        self.ehlo_resp: bytes | None = None
        self.does_esmtp = False
        self.esmtp_features: dict[str, str] = {}
        self.user: str | None = None
        self.password: str | None = None
        self._auth_challenge_count = 0
        #: How long to wait for the reply to the end of the data; None: ``timeout``.
        #: Giving up early turns a delivered message into one of unknown fate.
        self.data_timeout: float | None = None
        # The transaction of the task that holds the lock (see _Transaction).
        self._tx = _Transaction()
        # Set while a transaction that handed the lock on reads its final replies:
        # every other read waits for it, since replies come in order.
        self._final_read: anyio.Event | None = None
        self._transport: Transport | None = None
        self._conn: SMTPConnection | None = None
        # fast_acquire: an uncontended lock costs no trip through the event loop.
        self._lock = anyio.Lock(fast_acquire=True)

    def __repr__(self) -> str:
        state = self._conn.state.name if self._conn is not None else "not connected"
        return f"<{type(self).__name__} {self._host or '-'}:{self._port or '-'} {state}>"

    @property
    def end_of_data_sent(self) -> bool:
        """Whether the last transaction's data was sent in full (after which a lost
        connection means an unknown outcome, not a failure)."""
        return self._tx.end_of_data_sent

    @property
    def is_closed(self) -> bool:
        """True when not connected (never connected, closed, or lost)."""
        return self._transport is None

    def has_unsolicited_input(self) -> bool:
        """True if anything arrived that no command asked for (an idle connection
        that the server closed, or a 421 it sent before hanging up), or if not
        connected: such a connection must not be used for a new transaction."""
        if self._transport is None or self._conn is None:
            return True
        return self._conn.awaiting_replies == 0 and (
            self._conn.has_buffered_input() or self._transport.is_readable()
        )

    @property
    def is_tls(self) -> bool:
        """True when the connection is encrypted (SMTP_SSL, or after STARTTLS)."""
        return self._transport is not None and self._transport.is_tls

    # -- context manager -------------------------------------------------------

    async def __aenter__(self) -> SMTP:
        if self._host:
            reply = await self.connect(self._host, self._port)
            if reply.code != 220:
                await self.close()
                raise SMTPConnectError(reply.code, reply.message)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        cancelled = exc_type is not None and issubclass(exc_type, anyio.get_cancelled_exc_class())
        try:
            if self._conn is not None and not cancelled:
                reply: Reply | None = None
                try:
                    reply = await self.docmd("QUIT")
                except SMTPServerDisconnected:
                    pass  # a server that is already gone is no error on the way out
                except SMTPException:
                    # A session stuck mid-command cannot QUIT; do not hide the
                    # exception that left the block.
                    if exc_type is None:
                        raise
                if reply is not None and reply.code != 221 and exc_type is None:
                    raise SMTPResponseException(reply.code, reply.message)
        finally:
            await self.close()

    # -- debugging ---------------------------------------------------------------

    def set_debuglevel(self, debuglevel: int) -> None:
        """1 prints the protocol trace to stderr, 2 adds timestamps (as smtplib)."""
        self.debuglevel = debuglevel

    def _debug(self, *args: object) -> None:
        if self.debuglevel > 1:
            print(datetime.datetime.now().time(), *args, file=sys.stderr)
        else:
            print(*args, file=sys.stderr)

    def _trace_send(self, commands: Sequence[Command]) -> None:
        hooks = self.hooks
        if self.debuglevel > 0 or hooks is not None or logger.isEnabledFor(logging.DEBUG):
            for command in commands:
                line = command.redacted()
                if self.debuglevel > 0:
                    self._debug("send:", repr(line + "\r\n"))
                logger.debug("%s >> %s", self._host, line)
                if hooks is not None:
                    command_sent(hooks, command, line)
            self._hook_clock = time.perf_counter()

    def _trace_reply(self, reply: Reply) -> None:
        if self.hooks is not None:
            call_hook(self.hooks.on_reply, reply, time.perf_counter() - self._hook_clock)
        if self.debuglevel > 0:
            self._debug(f"reply: retcode ({reply.code}); Msg: {reply.message!r}")
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s << %d %s", self._host, reply.code, reply.text)

    # -- connection ----------------------------------------------------------

    async def connect(
        self, host: str = "localhost", port: int = 0, source_address: tuple[str, int] | None = None
    ) -> Reply:
        """Connect and return the greeting (a non-220 greeting is returned, not raised)."""
        async with self._lock:
            return await self._connect(host, port, source_address)

    async def _connect(
        self, host: str, port: int, source_address: tuple[str, int] | None
    ) -> Reply:
        if source_address:
            self.source_address = source_address
        if not port and host.count(":") == 1:
            host, _, port_text = host.partition(":")
            try:
                port = int(port_text)
            except ValueError:
                raise OSError("nonnumeric port") from None
        if not port:
            port = self.default_port
        if self._transport is not None:
            await self._drop_connection()
        if self.debuglevel > 0:
            self._debug("connect:", (host, port))
        if self.local_hostname is None:
            self.local_hostname = await anyio.to_thread.run_sync(_local_hostname)
        started = time.perf_counter()
        self._transport = await self._open_transport(host, port)
        if self.hooks is not None:
            self._hook_clock = now = time.perf_counter()
            call_hook(self.hooks.on_connect, host, port, self.is_tls, now - started)
        self._host, self._port = host, port
        self._conn = SMTPConnection(lmtp=self._lmtp)
        # What a server said in another session says nothing about this one.
        self._forget_ehlo()
        async with self._io_guard():
            reply = await self._read_reply()
        if self.debuglevel > 0:
            self._debug("connect:", reply)
        return reply

    async def _open_transport(self, host: str, port: int) -> Transport:
        return await Transport.connect_tcp(
            host,
            port,
            timeout=self.timeout,
            source_address=self.source_address,
            proxy=self.proxy,
        )

    async def close(self) -> None:
        """Close the connection, without QUIT."""
        await self._drop_connection()

    aclose = close

    def _detach(self) -> Transport | None:
        """Forget the session at once (no await), handing back the transport to close."""
        transport, self._transport = self._transport, None
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        return transport

    async def _drop_connection(self) -> None:
        """Close in an orderly way (bounded): the session ended or the server hung up."""
        transport = self._detach()
        if transport is not None:
            await transport.aclose()

    async def _abort(self) -> None:
        """Close at once: the session can no longer be trusted."""
        transport = self._detach()
        if transport is not None:
            await transport.abort()

    def _forget_ehlo(self) -> None:
        self.helo_resp = None
        self.ehlo_resp = None
        self.esmtp_features = {}
        self.does_esmtp = False

    def _connection(self) -> tuple[Transport, SMTPConnection]:
        if self._transport is None or self._conn is None:
            raise SMTPServerDisconnected("please run connect() first")
        return self._transport, self._conn

    # -- the exchange of bytes -----------------------------------------------

    def _io_guard(self) -> _IOGuard:
        """The block around every exchange: any failure inside closes the
        connection (see the theory of operation above)."""
        return _IOGuard(self)

    async def _read_reply(self, timeout: float | None = None) -> Reply:
        if self._final_read is not None:
            await self._wait_for_final_read()
        return await self._read_own_reply(timeout)

    async def _wait_for_final_read(self) -> None:
        """Wait until the transaction that handed the lock on has read its replies,
        which come before ours. That read has its own timeout, so this wait ends.

        Cancelled here, like anywhere between a command and its reply, this
        transaction closes the connection; the earlier message's fate is then
        unknown to its sender (SMTPDeliveryUnknownError).
        """
        final_read = self._final_read
        assert final_read is not None
        await final_read.wait()
        if self._conn is None:
            raise SMTPServerDisconnected(
                "connection lost while an earlier message on it waited for its reply"
            )

    async def _read_own_reply(self, timeout: float | None = None) -> Reply:
        transport, conn = self._connection()
        reply = conn.next_reply()
        if reply is NEED_DATA:
            # The timeout bounds the whole reply, not each read: a server that
            # trickles a byte at a time cannot hold the client for ever. Any
            # monotonic clock does to measure what is left of it.
            limit = timeout or self.timeout
            deadline = None if limit is None else time.monotonic() + limit
            while reply is NEED_DATA:
                remaining = None if deadline is None else deadline - time.monotonic()
                conn.receive_data(await transport.receive(remaining, limit))
                reply = conn.next_reply()
        self._trace_reply(reply)
        if conn.state is State.CLOSED:
            # QUIT was answered, or the server said 421 and is hanging up.
            await self._drop_connection()
        return reply

    def _encode(self, commands: Sequence[Command]) -> bytes:
        _, conn = self._connection()
        try:
            return conn.send_many(commands)
        except ValueError:
            raise
        except LocalProtocolError as exc:
            raise SMTPException(str(exc)) from exc

    async def _exchange(self, commands: Sequence[Command]) -> list[Reply]:
        """Send commands (pipelined when more than one) and read their replies.

        Stops early, with fewer replies, if the session closes on the way (421).
        """
        await self._refuse_idle_input(commands[0].verb)
        replies: list[Reply] = []
        for start in range(0, len(commands), _PIPELINE_GROUP):
            group = commands[start : start + _PIPELINE_GROUP]
            data = self._encode(group)
            transport, _ = self._connection()
            async with self._io_guard():
                self._trace_send(group)
                await transport.send(data, self.timeout)
                for _ in group:
                    replies.append(await self._read_reply())
                    if self._conn is None:
                        return replies
        return replies

    async def _refuse_idle_input(self, verb: str) -> None:
        """Before the first command of an exchange, with no reply owed: anything the
        server said meanwhile would be read as the answer to that command, and every
        reply after it would be one off. Read it and refuse it by name; the
        connection is closed."""
        transport, conn = self._connection()
        if not self.has_unsolicited_input():
            return
        async with self._io_guard():
            if not conn.has_buffered_input():
                # At the end of the stream this raises SMTPServerDisconnected.
                conn.receive_data(await transport.receive(self.timeout))
            # With no reply owed, a whole one raises RemoteProtocolError, "unsolicited".
            if conn.next_reply() is NEED_DATA:
                raise RemoteProtocolError(
                    f"unsolicited bytes from the server while the client was idle, before {verb}"
                )

    async def _command(self, command: Command) -> Reply:
        return (await self._exchange((command,)))[0]

    # -- simple commands -----------------------------------------------------

    async def docmd(self, cmd: str, args: str = "") -> Reply:
        """Send one command line and return the reply."""
        async with self._lock:
            return await self._command(Command.make(cmd, args))

    async def helo(self, name: str = "") -> Reply:
        async with self._lock:
            return await self._helo(name)

    async def _helo(self, name: str) -> Reply:
        self._connection()
        reply = await self._command(Command.make("HELO", name or self.local_hostname or ""))
        self.helo_resp = reply.message
        return reply

    async def ehlo(self, name: str = "") -> Reply:
        async with self._lock:
            return await self._ehlo(name)

    async def _ehlo(self, name: str) -> Reply:
        self._connection()
        command = Command.make(self.ehlo_msg, name or self.local_hostname or "")
        self.esmtp_features = {}
        reply = await self._command(command)
        self.ehlo_resp = reply.message
        if reply.code == 250:
            self.does_esmtp = True
            self.esmtp_features = parse_ehlo_features(reply.message)
        return reply

    async def ehlo_or_helo_if_needed(self) -> None:
        """EHLO (or HELO if EHLO is refused) unless one was done in this session."""
        async with self._lock:
            await self._ehlo_or_helo_if_needed()

    async def _ehlo_or_helo_if_needed(self) -> None:
        if self.helo_resp is not None or self.ehlo_resp is not None:
            return
        reply = await self._ehlo("")
        if not 200 <= reply.code <= 299:
            if self._conn is None:
                # 421: the server is closing the session (RFC 5321 section 3.8).
                raise SMTPServerDisconnected(
                    f"the server answered EHLO with {reply.code} {reply.text} "
                    "and closed the connection"
                )
            reply = await self._helo("")
            if not 200 <= reply.code <= 299:
                raise SMTPHeloError(reply.code, reply.message)

    def has_extn(self, opt: str) -> bool:
        """Whether the server's EHLO reply listed this extension."""
        return opt.lower() in self.esmtp_features

    async def help(self, args: str = "") -> bytes:
        async with self._lock:
            return (await self._command(Command.make("HELP", args))).message

    async def rset(self) -> Reply:
        async with self._lock:
            return await self._command(_RSET)

    async def _rset_quietly(self) -> None:
        # smtplib's _rset: after a failed transaction, a server that is gone is fine.
        if self._conn is None or self._conn.state not in (State.READY, State.TRANSACTION):
            return
        with contextlib.suppress(SMTPServerDisconnected):
            await self._command(_RSET)

    async def noop(self) -> Reply:
        async with self._lock:
            return await self._command(Command.make("NOOP"))

    async def verify(self, address: str) -> Reply:
        async with self._lock:
            return await self._command(Command.make("VRFY", address_only(address)))

    vrfy = verify

    async def expn(self, address: str) -> Reply:
        async with self._lock:
            return await self._command(Command.make("EXPN", address_only(address)))

    async def quit(self) -> Reply:
        """Say QUIT, forget the session, and close."""
        async with self._lock:
            reply = await self._command(Command.make("QUIT"))
            self._forget_ehlo()
            await self._drop_connection()
            return reply

    # -- TLS -------------------------------------------------------------------

    async def starttls(
        self, *, context: ssl.SSLContext | None = None, server_hostname: str | None = None
    ) -> Reply:
        """Upgrade the connection to TLS (RFC 3207); certificates are verified."""
        async with self._lock:
            await self._ehlo_or_helo_if_needed()
            if not self.has_extn("starttls"):
                raise SMTPNotSupportedError("STARTTLS extension not supported by server.")
            if context is None:
                context = self.context or await _default_ssl_context()
            reply = await self._command(Command.make("STARTTLS"))
            if reply.code != 220:
                raise SMTPResponseException(reply.code, reply.message)
            transport, conn = self._connection()
            started = time.perf_counter()
            async with self._io_guard():
                conn.start_tls_done()
                name = server_hostname or self.server_hostname or self._host
                await transport.start_tls(context, name, self.timeout)
            if self.hooks is not None:
                call_hook(self.hooks.on_tls, self._host, time.perf_counter() - started)
            # RFC 3207 section 4.2: forget everything learnt before TLS.
            self._forget_ehlo()
            return reply

    # -- AUTH ------------------------------------------------------------------

    def auth_plain(self, challenge: bytes | None = None) -> str:
        """The PLAIN authobject for auth() (RFC 4616)."""
        return plain_response(self.user or "", self.password or "").decode()

    def auth_login(self, challenge: bytes | None = None) -> str:
        """The LOGIN authobject for auth(): the user name, then the password."""
        number = 1 if challenge is None else self._auth_challenge_count
        return login_response(self.user or "", self.password or "", number).decode()

    def auth_cram_md5(self, challenge: bytes | None = None) -> str | None:
        """The CRAM-MD5 authobject for auth() (RFC 2195); it has no initial response."""
        if challenge is None:
            return None
        return cram_md5_response(self.user or "", self.password or "", challenge).decode()

    async def login(self, user: str, password: str, *, initial_response_ok: bool = True) -> Reply:
        """Authenticate with the strongest password mechanism both sides know."""
        async with self._lock:
            await self._ehlo_or_helo_if_needed()
            if not self.has_extn("auth"):
                raise SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
            advertised = self.esmtp_features["auth"].upper().split()
            binding = self._channel_binding()
            can_bind = binding is not None
            mechanisms = choose_password_mechanisms(advertised, channel_binding=can_bind)
            if not mechanisms:
                raise SMTPException(
                    "No suitable authentication method found: the server offers "
                    f"{' '.join(advertised) or 'none'}, aiosmtp knows "
                    f"{' '.join(PASSWORD_MECHANISMS)}."
                )
            self.user, self.password = user, password
            authobjects = {
                "CRAM-MD5": self.auth_cram_md5,
                "PLAIN": self.auth_plain,
                "LOGIN": self.auth_login,
            }
            last_error: SMTPAuthenticationError | None = None
            unprepared: SASLprepError | None = None
            for mechanism in mechanisms:
                try:
                    if mechanism in SCRAM_MECHANISMS:
                        reply = await scram_login(
                            self, mechanism, user, password, binding, initial_response_ok
                        )
                    else:
                        reply = await self._auth(
                            mechanism, authobjects[mechanism], initial_response_ok
                        )
                except SASLprepError as exc:
                    unprepared = exc  # SCRAM cannot carry these credentials; nothing sent
                except SMTPAuthenticationError as exc:
                    last_error = exc
                    if self._conn is None:
                        raise  # closed (untrusted, or 421): no next mechanism
                else:
                    if reply.code in (235, 503):
                        return reply
            if last_error is None and unprepared is not None:
                raise unprepared
            assert last_error is not None
            raise last_error

    def _channel_binding(self) -> bytes | None:
        """The tls-server-end-point data of this TLS session (RFC 5929), or None
        (no TLS, or a certificate for which RFC 5929 defines none)."""
        transport = self._transport
        if transport is None or not transport.is_tls:
            return None
        der = transport.peer_certificate()
        return None if der is None else tls_server_end_point(der)

    async def login_oauth(
        self, user: str, token: TokenSource, *, mechanism: str | None = None
    ) -> Reply:
        """Authenticate with an OAuth 2 bearer token: OAUTHBEARER (RFC 7628) when
        offered, else XOAUTH2, unless ``mechanism`` names one.

        ``token`` is the token, or an async callable returning a fresh one; then a
        refused token is followed by one retry with the callable's next token.
        """
        async with self._lock:
            await self._ehlo_or_helo_if_needed()
            if not self.has_extn("auth"):
                raise SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
            advertised = self.esmtp_features["auth"].upper().split()
            chosen = choose_oauth_mechanism(advertised, mechanism)
            self.user = user
            return await oauth_login(self, user, token, chosen)

    async def auth(
        self, mechanism: str, authobject: AuthObject, *, initial_response_ok: bool = True
    ) -> Reply:
        """Run one SASL exchange, smtplib style: ``authobject(challenge)`` answers
        each challenge, and ``authobject()`` gives the initial response (or None)."""
        async with self._lock:
            return await self._auth(mechanism, authobject, initial_response_ok)

    async def _auth(
        self, mechanism: str, authobject: AuthObject, initial_response_ok: bool
    ) -> Reply:
        mechanism = mechanism.upper()
        initial = authobject() if initial_response_ok else None
        if initial is not None:
            encoded = encode_response(_as_bytes(initial), initial=True)
            command = Command.make("AUTH", f"{mechanism} {encoded}", sensitive=True)
            self._auth_challenge_count = 1
        else:
            command = Command.make("AUTH", mechanism)
            self._auth_challenge_count = 0
        reply = await self._command(command)
        while reply.code == 334:
            self._auth_challenge_count += 1
            if self._auth_challenge_count > _MAX_CHALLENGES:
                await self._cancel_auth()
                raise SMTPException(
                    f"Server AUTH mechanism infinite loop. Last response: {tuple(reply)!r}"
                )
            try:
                challenge = decode_challenge(reply.message)
                response = encode_response(_as_bytes(authobject(challenge)))
            except RemoteProtocolError as exc:
                await self._abort()
                raise SMTPResponseException(exc.code, str(exc)) from exc
            except BaseException:
                await self._cancel_auth()
                raise
            reply = await self._command(Command.auth_response(response))
        if reply.code in (235, 503):
            return reply
        raise SMTPAuthenticationError(reply.code, reply.message)

    async def _cancel_auth(self) -> None:
        # RFC 4954 section 4: "*" cancels the exchange and keeps the session.
        with anyio.CancelScope(shield=True):
            if self._conn is not None and self._conn.state is State.AUTH:
                await self._command(Command.auth_response("*"))

    # -- mail transactions -----------------------------------------------------

    def _mail_command(self, sender: str, options: Sequence[str]) -> Command:
        option_text = ""
        if options and self.does_esmtp:
            if any(option.lower() == "smtputf8" for option in options) and not self.has_extn(
                "smtputf8"
            ):
                raise SMTPNotSupportedError("SMTPUTF8 not supported by server")
            option_text = " " + " ".join(options)
        return Command.make("MAIL", f"FROM:{quote_address(sender)}{option_text}")

    def _rcpt_command(self, recipient: str, options: Sequence[str]) -> Command:
        option_text = " " + " ".join(options) if options and self.does_esmtp else ""
        return Command.make("RCPT", f"TO:{quote_address(recipient)}{option_text}")

    async def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
        async with self._lock:
            return await self._command(self._mail_command(sender, options))

    async def rcpt(self, recip: str, options: Sequence[str] = ()) -> Reply:
        async with self._lock:
            return await self._command(self._rcpt_command(recip, options))

    async def data(self, msg: MessageSource) -> Reply:
        """DATA and the message; a refused DATA raises SMTPDataError (as smtplib)."""
        body = as_body(msg)
        async with self._lock:
            reply = await self._command(_DATA)
            if reply.code != 354:
                raise SMTPDataError(reply.code, reply.message)
            replies = await self._send_body(body)
            return replies[-1]

    async def _send(self, data: bytes) -> None:
        transport, _ = self._connection()
        if len(data) <= _WRITE_SLICE:
            await transport.send(data, self.timeout)
            return
        # A large body goes out in slices, each written once the previous one has
        # drained: the transport (and TLS) then never hold a second copy of it.
        view = memoryview(data)
        for start in range(0, len(data), _WRITE_SLICE):
            await transport.send(view[start : start + _WRITE_SLICE], self.timeout)

    async def _send_body(
        self,
        body: MessageBody,
        progress: ProgressCallback | None = None,
        *,
        may_hand_off: bool = False,
    ) -> list[Reply]:
        """Send the message after a 354 and read the replies to its end.

        Once the final dot has left, a lost connection or a timeout no longer means
        "not delivered": it raises SMTPDeliveryUnknownError.
        """
        transport, conn = self._connection()
        if isinstance(body, BytesBody) and body.size is not None and body.size <= _COALESCE_LIMIT:
            # The common case: one write, with no generator to drive and close.
            async with self._io_guard():
                payload = conn.send_data(body.data, normalized=True)
                await transport.send(payload + conn.end_data(), self.timeout)
                if progress is not None:
                    progress(body.size)
                return await self._after_end_of_data(body.size, may_hand_off)
        sent = 0
        # Small pieces are gathered into one write; large ones go out as they are.
        pending: list[bytes] = []
        pending_size = 0
        async with self._io_guard(), contextlib.aclosing(body.chunks()) as chunks:
            transport.pause_deadline()
            async for chunk in chunks:
                payload = conn.send_data(chunk)
                pending.append(payload)
                pending_size += len(payload)
                if pending_size >= _COALESCE_LIMIT:
                    await self._send(pending[0] if len(pending) == 1 else b"".join(pending))
                    pending, pending_size = [], 0
                sent += len(chunk)
                if progress is not None:
                    progress(sent)
                transport.pause_deadline()  # the next piece may take its time
            end = conn.end_data()
            if pending_size + len(end) <= _COALESCE_LIMIT:
                await self._send(b"".join([*pending, end]))
            else:
                await self._send(b"".join(pending))
                await self._send(end)
            return await self._after_end_of_data(sent, may_hand_off)

    async def _after_end_of_data(self, sent: int, may_hand_off: bool) -> list[Reply]:
        self._tx.end_of_data_sent = True
        if self.debuglevel > 0:
            self._debug("send:", f"<message data, {sent} bytes>")
        if self.hooks is not None:
            call_hook(self.hooks.on_command, ".", f"<message data, {sent} bytes>")
            self._hook_clock = time.perf_counter()
        return await self._read_final_replies(may_hand_off=may_hand_off)

    async def _read_final_replies(self, *, may_hand_off: bool = False) -> list[Reply]:
        """Read the replies to the end of the data (inside ``_io_guard``, which turns
        a loss or a timeout from here on into SMTPDeliveryUnknownError).

        Under the pool's overlap (``may_hand_off`` and ``tx.on_handoff``, with
        PIPELINING), the lock goes
        to the next transaction first, so that its commands travel while this
        message's reply is on its way back. Only after DATA's final dot: the server
        has then left the transaction whatever it answers (RFC 5321 section
        4.1.1.4), while after a refused ``BDAT LAST`` it would still be open.
        """
        tx = self._tx
        tx.delivery_pending = True
        conn = self._conn
        if conn is None:
            return []
        if self._final_read is not None:
            await self._wait_for_final_read()
        # This transaction's replies: what it awaits now, plus LMTP's per-recipient
        # replies, which the core queues once the first of them has come.
        owed = conn.awaiting_replies
        if may_hand_off and tx.on_handoff is not None and self.has_extn("pipelining"):
            final_read = self._final_read = anyio.Event()
            tx.handed_off = True
            self._lock.release()
            tx.on_handoff()
            try:
                replies = await self._read_owned_replies(owed)
            finally:
                self._final_read = None
                final_read.set()
        else:
            replies = await self._read_owned_replies(owed)
        tx.delivery_pending = False
        return replies

    async def _read_owned_replies(self, owed: int) -> list[Reply]:
        replies = []
        while self._conn is not None and (owed > 0 or self._conn.awaits_recipient_status):
            replies.append(await self._read_own_reply(self.data_timeout))
            owed -= 1
        return replies

    async def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: MessageSource,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
        *,
        progress: ProgressCallback | None = None,
        dsn: DSN | None = None,
        require_tls: bool = False,
        strict_8bit: bool = False,
    ) -> SendResult:
        """Send one message, with smtplib's rules; return the refused recipients.

        ``msg`` may also be a binary file or an async iterable of bytes, streamed
        with bounded memory; ``progress(bytes_sent)`` is called as the body goes out.
        ``dsn`` asks for delivery notices (RFC 3461), ``require_tls`` for REQUIRETLS
        (RFC 8689), ``strict_8bit`` for an error rather than an undeclared 8-bit
        body; each fails before MAIL if the session cannot honour it.
        """
        extras = MailExtras(dsn, require_tls, strict_8bit)
        sending = self._sendmail_with_lock(
            _Transaction(),
            from_addr,
            to_addrs,
            as_body(msg),
            mail_options,
            rcpt_options,
            progress,
            extras,
        )
        if self.hooks is None:
            return await sending
        recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        return await observe_message(self.hooks, sending, from_addr, recipients)

    async def _sendmail_with_lock(
        self,
        tx: _Transaction,
        from_addr: str,
        to_addrs: str | Sequence[str],
        body: MessageBody,
        mail_options: Sequence[str],
        rcpt_options: Sequence[str],
        progress: ProgressCallback | None,
        extras: MailExtras = NO_EXTRAS,
    ) -> SendResult:
        """``sendmail`` for a transaction the caller keeps track of (the pool)."""
        await self._lock.acquire()
        try:
            await self._ehlo_or_helo_if_needed()
            return await self._sendmail(
                from_addr, to_addrs, body, mail_options, rcpt_options, progress, tx, extras
            )
        finally:
            if not tx.handed_off:
                self._lock.release()

    async def send_message(
        self,
        msg: email.message.Message,
        from_addr: str | None = None,
        to_addrs: str | Sequence[str] | None = None,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
        *,
        progress: ProgressCallback | None = None,
        dsn: DSN | None = None,
        require_tls: bool = False,
        strict_8bit: bool = False,
    ) -> SendResult:
        """Send an email.message.Message, taking the envelope from its headers."""
        extras = MailExtras(dsn, require_tls, strict_8bit)
        sending = self._send_message(
            msg, from_addr, to_addrs, mail_options, rcpt_options, progress, extras
        )
        if self.hooks is None:
            return await sending
        sender, recipients = message_envelope(msg, from_addr, to_addrs)
        return await observe_message(self.hooks, sending, sender, recipients)

    async def _send_message(
        self,
        msg: email.message.Message,
        from_addr: str | None,
        to_addrs: str | Sequence[str] | None,
        mail_options: Sequence[str],
        rcpt_options: Sequence[str],
        progress: ProgressCallback | None,
        extras: MailExtras,
    ) -> SendResult:
        tx = _Transaction()
        await self._lock.acquire()
        try:
            await self._ehlo_or_helo_if_needed()
            envelope = flatten_message(
                msg,
                from_addr,
                to_addrs,
                mail_options,
                server_has_smtputf8=self.has_extn("smtputf8"),
            )
            return await self._sendmail(
                envelope.sender,
                envelope.recipients,
                as_body(envelope.data),
                envelope.mail_options,
                rcpt_options,
                progress,
                tx,
                extras,
            )
        finally:
            if not tx.handed_off:
                self._lock.release()

    async def _sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        body: MessageBody,
        mail_options: Sequence[str],
        rcpt_options: Sequence[str],
        progress: ProgressCallback | None = None,
        tx: _Transaction | None = None,
        extras: MailExtras = NO_EXTRAS,
    ) -> SendResult:
        tx = self._tx = _Transaction() if tx is None else tx
        recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        options: list[str] = []
        if self.does_esmtp:
            if self.has_extn("size") and body.size is not None:
                options.append(f"SIZE={body.size}")
            options.extend(mail_options)
        # DSN, REQUIRETLS, BODY= and the SIZE precheck (_mailopts.py): decided, or
        # refused, before anything is sent.
        plan = await plan_parameters(
            self, from_addr, recipients, body, mail_options, rcpt_options, extras
        )
        options.extend(plan.mail)
        # Every command is built and encoded, and so checked, before the first is
        # sent: a bad recipient must not leave a transaction half open.
        mail = self._mail_command(from_addr, options)
        rcpts = [
            self._rcpt_command(
                recipient, rcpt_options if plan.rcpt is None else [*rcpt_options, *plan.rcpt[i]]
            )
            for i, recipient in enumerate(recipients)
        ]
        if not recipients:
            raise SMTPRecipientsRefused({})
        pipelining = self.does_esmtp and self.has_extn("pipelining")
        if not pipelining or len(rcpts) + 2 > _PIPELINE_GROUP:
            # Sent one by one or in several groups, the commands are encoded a bit
            # at a time: check them all first. (One pipelined group is encoded
            # whole before anything is sent.)
            encoding = "utf-8" if any(opt.upper() == "SMTPUTF8" for opt in options) else "ascii"
            for command in (mail, *rcpts):
                command.to_bytes(encoding)
        if self.chunking and self.does_esmtp and self.has_extn("chunking"):
            return await self._bdat_transaction(
                from_addr, recipients, mail, rcpts, body, pipelining, progress
            )
        if pipelining:
            replies = await self._exchange([mail, *rcpts, _DATA])
        else:
            replies = await self._exchange_step_by_step(mail, rcpts, _DATA)
        accepted, refused, data_reply = await self._check_envelope(from_addr, recipients, replies)
        if data_reply.code != 354:
            await self._abandon_transaction(data_reply)
            raise SMTPDataError(data_reply.code, data_reply.message)
        final_replies = await self._send_body(body, progress, may_hand_off=True)
        return await self._result(tx, recipients, accepted, refused, final_replies)

    async def _check_envelope(
        self, from_addr: str, recipients: list[str], replies: list[Reply]
    ) -> tuple[list[str], dict[str, tuple[int, bytes]], Reply]:
        """smtplib's verdict on the MAIL and RCPT replies, in smtplib's order.

        Returns the accepted and refused recipients and the reply that followed
        them (to DATA, or to the first BDAT); raises where smtplib raises.
        """
        mail_reply = replies[0]
        rcpt_replies = replies[1 : 1 + len(recipients)]
        next_reply = replies[1 + len(recipients)] if len(replies) > 1 + len(recipients) else None
        if mail_reply.code != 250:
            await self._abandon_transaction(next_reply)
            raise SMTPSenderRefused(mail_reply.code, mail_reply.message, from_addr)
        refused: dict[str, tuple[int, bytes]] = {}
        accepted: list[str] = []
        for recipient, reply in zip(recipients, rcpt_replies, strict=False):
            if reply.code in (250, 251):
                accepted.append(recipient)
            else:
                refused[recipient] = (reply.code, reply.message)
            if reply.code == 421:
                await self._drop_connection()
                raise SMTPRecipientsRefused(refused)
        if not accepted:
            await self._abandon_transaction(next_reply)
            raise SMTPRecipientsRefused(refused)
        if next_reply is None:
            await self._drop_connection()
            raise SMTPServerDisconnected("connection closed in the middle of the transaction")
        return accepted, refused, next_reply

    async def _result(
        self,
        tx: _Transaction,
        recipients: list[str],
        accepted: list[str],
        refused: dict[str, tuple[int, bytes]],
        final_replies: list[Reply],
    ) -> SendResult:
        if not final_replies:
            raise SMTPDeliveryUnknownError(
                "connection closed before the reply to the message; it may have been delivered"
            )
        if self._lmtp:
            return self._lmtp_result(recipients, accepted, refused, final_replies)
        final = final_replies[0]
        if final.code != 250:
            # The server left the transaction with its reply; after a hand-off the
            # lock (and the connection) belong to the next one, so no RSET then.
            if not tx.handed_off:
                await self._abandon_transaction(None)
            raise SMTPDataError(final.code, final.message)
        return SendResult(refused, final)

    async def _bdat_transaction(
        self,
        from_addr: str,
        recipients: list[str],
        mail: Command,
        rcpts: list[Command],
        body: MessageBody,
        pipelining: bool,
        progress: ProgressCallback | None,
    ) -> SendResult:
        """CHUNKING (RFC 3030): the body in BDAT chunks of at most CHUNK_SIZE bytes.

        With PIPELINING, MAIL, every RCPT and the first chunk go out in one write,
        so a message that fits one chunk costs one round trip.
        """
        if isinstance(body, BytesBody) and body.size is not None and body.size <= CHUNK_SIZE:
            # The common case needs neither the chunker nor a generator to close.
            return await self._bdat_chunks_transaction(
                from_addr, recipients, mail, rcpts, _SingleChunk(body.data), pipelining, progress
            )
        async with contextlib.aclosing(_bdat_chunks(body)) as chunks:
            return await self._bdat_chunks_transaction(
                from_addr, recipients, mail, rcpts, chunks, pipelining, progress
            )

    async def _bdat_chunks_transaction(
        self,
        from_addr: str,
        recipients: list[str],
        mail: Command,
        rcpts: list[Command],
        chunks: AsyncIterator[tuple[bytes, bool]],
        pipelining: bool,
        progress: ProgressCallback | None,
    ) -> SendResult:
        tx = self._tx
        first, is_last = await anext(chunks)
        if pipelining:
            await self._refuse_idle_input(mail.verb)
            envelope = self._encode([mail, *rcpts])
            async with self._io_guard():
                self._trace_send([mail, *rcpts])
                await self._send_bdat_chunk(envelope, first, is_last)
                replies = await self._read_bdat_replies(1 + len(rcpts), is_last)
        else:
            replies = await self._exchange_step_by_step(mail, rcpts, None)
            if len(replies) == 1 + len(rcpts) and any(
                reply.code in (250, 251) for reply in replies[1:]
            ):
                async with self._io_guard():
                    await self._send_bdat_chunk(b"", first, is_last)
                    replies += await self._read_bdat_replies(0, is_last)
        accepted, refused, chunk_reply = await self._check_envelope(from_addr, recipients, replies)
        sent = len(first)
        if progress is not None:
            progress(sent)
        final_replies = replies[1 + len(rcpts) :]
        while not is_last:
            if chunk_reply.code != 250:
                break
            chunk, is_last = await anext(chunks)
            async with self._io_guard():
                await self._send_bdat_chunk(b"", chunk, is_last)
                final_replies = await self._read_bdat_replies(0, is_last)
            chunk_reply = final_replies[0]
            sent += len(chunk)
            if progress is not None:
                progress(sent)
        if self.debuglevel > 0:
            self._debug("send:", f"<message data in BDAT chunks, {sent} bytes>")
        if not is_last:
            # RFC 3030 section 4.2: after a refused chunk, send no more of them.
            await self._abandon_transaction(None)
            raise SMTPDataError(chunk_reply.code, chunk_reply.message)
        return await self._result(tx, recipients, accepted, refused, final_replies)

    async def _send_bdat_chunk(self, prefix: bytes, chunk: bytes, last: bool) -> None:
        _, conn = self._connection()
        header = conn.send_bdat(len(chunk), last=last)
        self._trace_send([Command("BDAT", f"{len(chunk)} LAST" if last else str(len(chunk)))])
        if len(chunk) <= _COALESCE_LIMIT:
            await self._send(prefix + header + chunk)
        else:
            await self._send(prefix + header)
            await self._send(chunk)
        if last:
            self._tx.end_of_data_sent = True

    async def _read_bdat_replies(self, envelope_replies: int, last: bool) -> list[Reply]:
        if last:
            # The end of the data has left: from here a lost connection leaves the
            # message's fate unknown, even while the envelope replies are read.
            return await self._read_final_replies()
        replies = [await self._read_reply() for _ in range(envelope_replies + 1)]
        return replies

    async def _exchange_step_by_step(
        self, mail: Command, rcpts: list[Command], data: Command | None
    ) -> list[Reply]:
        # Without PIPELINING, stop at the first reply that decides the outcome,
        # exactly where smtplib stops.
        replies = [await self._command(mail)]
        if replies[0].code != 250:
            return replies
        accepted = 0
        for rcpt in rcpts:
            reply = await self._command(rcpt)
            replies.append(reply)
            if reply.code == 421:
                return replies
            accepted += reply.code in (250, 251)
        if accepted and data is not None:
            replies.append(await self._command(data))
        return replies

    async def _abandon_transaction(self, data_reply: Reply | None) -> None:
        """Leave a failed transaction with the session in step: end a data phase a
        broken server opened, then RSET; or close if the server is closing."""
        if self._conn is None or self._conn.state is State.CLOSED:
            await self._drop_connection()
            return
        if data_reply is not None and data_reply.code == 354:
            # RFC 2920 section 3.1: the message that cannot be delivered is ended
            # at once with a lone dot.
            await self._send_body(as_body(b""))
        await self._rset_quietly()

    def _lmtp_result(
        self,
        recipients: list[str],
        accepted: list[str],
        refused: dict[str, tuple[int, bytes]],
        final_replies: list[Reply],
    ) -> SendResult:
        # RFC 2033 section 4.2: one reply per accepted recipient, in RCPT order.
        for recipient, reply in zip(accepted, final_replies, strict=False):
            if not 200 <= reply.code <= 299:
                refused[recipient] = (reply.code, reply.message)
        if len(refused) == len(recipients):
            raise SMTPRecipientsRefused(refused)
        return SendResult(refused, final_replies[-1])


class _SingleChunk:
    """An async iterator of one (chunk, last) pair, cheaper than a generator."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _SingleChunk:
        return self

    async def __anext__(self) -> tuple[bytes, bool]:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data, True


async def _bdat_chunks(body: MessageBody) -> AsyncGenerator[tuple[bytes, bool], None]:
    """(normalised chunk of at most CHUNK_SIZE bytes, is it the last) pairs; one
    chunk is held back, so that the last is known to be last when it is sent."""
    normalizer = LineEndingNormalizer()
    buffer = bytearray()
    pending: bytes | None = None
    async with contextlib.aclosing(body.chunks()) as raw_chunks:
        async for raw in raw_chunks:
            for start in range(0, len(raw), READ_SIZE):
                piece = raw if len(raw) <= READ_SIZE else raw[start : start + READ_SIZE]
                buffer += normalizer.feed(piece)
                while len(buffer) >= CHUNK_SIZE:
                    if pending is not None:
                        yield pending, False
                    with memoryview(buffer) as view:
                        pending = bytes(view[:CHUNK_SIZE])
                    del buffer[:CHUNK_SIZE]
    buffer += normalizer.finish()
    last_piece = buffer or pending or b""
    if last_piece and not last_piece.endswith(b"\n"):
        # As over DATA, where the final dot needs it, the message ends with a
        # line ending: both paths store the same bytes.
        buffer += b"\r\n"
    if pending is None:
        yield bytes(buffer), True
    elif buffer:
        yield pending, False
        yield bytes(buffer), True
    else:
        yield pending, True


class SMTP_SSL(SMTP):
    """SMTP over implicit TLS (RFC 8314), port 465 by default."""

    default_port: ClassVar[int] = SMTP_SSL_PORT

    async def _open_transport(self, host: str, port: int) -> Transport:
        context = self.context or await _default_ssl_context()
        return await Transport.connect_tcp(
            host,
            port,
            timeout=self.timeout,
            source_address=self.source_address,
            tls_context=context,
            server_hostname=self.server_hostname or host,
            proxy=self.proxy,
        )


class LMTP(SMTP):
    """LMTP (RFC 2033): LHLO, per-recipient replies after the data, Unix sockets."""

    default_port: ClassVar[int] = LMTP_PORT
    ehlo_msg: ClassVar[str] = "LHLO"
    _lmtp: ClassVar[bool] = True

    def __init__(
        self,
        host: str = "",
        port: int = LMTP_PORT,
        local_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        timeout: float | None = 60.0,
        *,
        context: ssl.SSLContext | None = None,
        hooks: Hooks | None = None,
        proxy: str | None = None,
    ) -> None:
        if proxy and host.startswith("/"):
            raise ValueError("a proxy cannot reach a Unix socket: connect to it directly")
        super().__init__(
            host,
            port,
            local_hostname,
            timeout,
            source_address,
            context=context,
            hooks=hooks,
            proxy=proxy,
        )

    async def _open_transport(self, host: str, port: int) -> Transport:
        if host.startswith("/"):
            if self.proxy is not None:
                raise ValueError("a proxy cannot reach a Unix socket: connect to it directly")
            return await Transport.connect_unix(host, timeout=self.timeout)
        return await super()._open_transport(host, port)
