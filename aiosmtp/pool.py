"""SMTPPool: many tasks, one server, a bounded set of reused connections.

Theory of operation (after httpcore's ``connection_pool``): a semaphore holds one
slot per allowed connection, so at most ``max_connections`` transactions run at
once and a waiting task waits in FIFO order, for at most ``timeout`` seconds. A task
that holds a slot takes the most recently used idle connection (warm ones stay
warm, cold ones expire) or opens a new one. Every decision about which connection
to use, retire or drop is plain code that never awaits (STYLE lesson 10); closing
happens afterwards, shielded and bounded, in the pool's own task group.

Transactions overlap on a connection where the server has PIPELINING: once a
message's final dot has left, its task gives up its slot, and the next transaction
may take the connection and send its MAIL, RCPT and DATA while the reply to that
dot is still on its way (RFC 2920 section 3.1). Replies still come, and are read,
in order; a message then costs one round trip instead of two.

Nothing is sent twice and nothing is lost silently: a transaction whose connection
failed before the end of its data went out cannot have been accepted, so it is
retried once on a fresh connection if its body can be read again; once the end of
the data has left, a lost connection raises SMTPDeliveryUnknownError and is never
retried.
"""

from __future__ import annotations

import contextlib
import email.message
import functools
import ipaddress
import logging
import math
import ssl
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.abc

from ._auth import TokenSource
from ._body import MessageBody, MessageSource, as_body
from ._mailopts import NO_EXTRAS, MailExtras
from ._proxy import parse_proxy
from .client import LMTP, SMTP, SMTP_SSL, ProgressCallback, SendResult, _Transaction
from .errors import (
    SMTPConnectError,
    SMTPDataError,
    SMTPDeliveryUnknownError,
    SMTPNotSupportedError,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from .hooks import Hooks, observe_message
from .message import flatten_message
from .protocol import DSN

__all__ = ["SMTPPool", "TLSMode", "send"]

TLSMode = Literal["starttls", "implicit", "opportunistic", "none"]
_TLS_MODES = ("starttls", "implicit", "opportunistic", "none")

#: RFC 5321 section 4.5.3.2.6: wait at least 10 minutes for the reply to the data.
DEFAULT_DATA_TIMEOUT = 600.0
# QUIT on the way out must not hold a closing pool for long.
_QUIT_TIMEOUT = 5.0

logger = logging.getLogger("aiosmtp.pool")


def _is_local(host: str) -> bool:
    if host.startswith("/"):
        return True
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _PooledConnection:
    """One client connection and what the pool knows about it."""

    def __init__(self, smtp: SMTP, number: int) -> None:
        self.smtp = smtp
        self.number = number
        self.messages_started = 0
        self.messages_sent = 0
        self.idle_since = math.inf
        # Transactions on it: at most one sending, and any that handed it on and
        # are reading the reply to their data.
        self.users = 0
        # Its sending transaction handed it on: another may start on it now.
        self.accepting = False
        self.closed = False

    @property
    def in_use(self) -> bool:
        return self.users > 0

    def is_available(self) -> bool:
        return not self.closed and (self.users == 0 or self.accepting)

    def has_expired(self, now: float, idle_timeout: float | None, max_messages: int) -> bool:
        if self.closed or self.messages_started >= max_messages:
            return True
        if self.users:
            return False
        return idle_timeout is not None and now - self.idle_since > idle_timeout

    def __repr__(self) -> str:
        if self.closed:
            state = "closed"
        elif self.accepting:
            state = "finishing a message, open to the next"
        else:
            state = "in use" if self.users else "idle"
        return f"<connection #{self.number} {state}, {self.messages_sent} sent>"


class SMTPPool:
    """A pool of SMTP connections to one server, shared by many tasks."""

    def __init__(
        self,
        host: str,
        port: int = 0,
        *,
        max_connections: int = 10,
        max_messages_per_connection: int = 100,
        idle_timeout: float | None = 30.0,
        rate_limit: float | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TLSMode | None = None,
        context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float | None = 60.0,
        local_hostname: str | None = None,
        lmtp: bool = False,
        data_timeout: float | None = DEFAULT_DATA_TIMEOUT,
        allow_insecure_auth: bool = False,
        hooks: Hooks | None = None,
        oauth_token: TokenSource | None = None,
        proxy: str | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        if max_messages_per_connection < 1:
            raise ValueError(
                "max_messages_per_connection must be at least 1, "
                f"not {max_messages_per_connection}"
            )
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError(f"rate_limit must be positive, not {rate_limit}")
        if tls is None and lmtp and host.startswith("/"):
            tls = "none"  # a Unix socket: nothing leaves the machine
        elif tls is None:
            tls = "implicit" if port == 465 else "starttls"
        if tls not in _TLS_MODES:
            raise ValueError(f"tls must be one of {', '.join(_TLS_MODES)}, not {tls!r}")
        if lmtp and tls == "implicit":
            # RFC 2033 defines no port with TLS from the first byte.
            raise ValueError("LMTP has no implicit TLS: use tls='starttls' (or 'none')")
        if password is not None and oauth_token is not None:
            raise ValueError("pass a password or an oauth_token, not both")
        if (username is None) != (password is None and oauth_token is None):
            raise ValueError("username goes with a password or an oauth_token")
        if proxy and lmtp and host.startswith("/"):
            raise ValueError("a proxy cannot reach a Unix socket: connect to it directly")
        # Checked now (ValueError, or ImportError without the extra), before any I/O.
        self.proxy = parse_proxy(proxy) if proxy else None
        self._proxy_url = proxy
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.max_messages_per_connection = max_messages_per_connection
        self.idle_timeout = idle_timeout
        self.rate_limit = rate_limit
        self.tls: TLSMode = tls
        self.context = context
        self.server_hostname = server_hostname
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.lmtp = lmtp
        self.data_timeout = data_timeout
        self._username = username
        self._password = password
        self._oauth_token = oauth_token
        self._allow_insecure_auth = allow_insecure_auth
        #: Given to every connection; on_message once per message (aiosmtp.hooks).
        self.hooks = hooks

        self._slots = anyio.Semaphore(max_connections)
        self._connections: list[_PooledConnection] = []
        self._opened = 0
        self._next_send_at = -math.inf
        self._task_group: anyio.abc.TaskGroup | None = None
        self._closing = False

    def __repr__(self) -> str:
        target = self.host if self.host.startswith("/") else f"{self.host}:{self.port}"
        return (
            f"<SMTPPool {target} tls={self.tls} "
            f"{len(self._connections)}/{self.max_connections} {self._connections!r}>"
        )

    # -- life cycle --------------------------------------------------------------

    async def __aenter__(self) -> SMTPPool:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        if self.idle_timeout is not None:
            self._task_group.start_soon(self._reap_idle)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        task_group, self._task_group = self._task_group, None
        if task_group is not None:
            # The background QUITs are shielded: they finish, bounded, before this.
            await task_group.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """QUIT every connection (shielded, bounded) and stop the pool."""
        self._closing = True
        connections, self._connections = self._connections, []
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as closers:
                for connection in connections:
                    closers.start_soon(self._quit, connection)

    async def _quit(self, connection: _PooledConnection) -> None:
        connection.closed = True
        smtp = connection.smtp
        with anyio.CancelScope(shield=True):
            if not connection.users:
                with anyio.move_on_after(_QUIT_TIMEOUT), contextlib.suppress(OSError):
                    await smtp.quit()  # SMTPException is an OSError
            await smtp.close()

    async def _reap_idle(self) -> None:
        assert self.idle_timeout is not None
        while True:
            await anyio.sleep(max(self.idle_timeout / 2, 0.01))
            now = time.monotonic()
            for connection in self._connections:
                if not connection.users and connection.has_expired(
                    now, self.idle_timeout, self.max_messages_per_connection
                ):
                    self._retire(connection)

    def _retire(self, connection: _PooledConnection) -> None:
        """Take a connection out of the pool now; QUIT it in the background."""
        logger.debug("%s: retiring %r", self.host, connection)
        if connection in self._connections:
            self._connections.remove(connection)
        connection.closed = True
        if self._task_group is not None:
            self._task_group.start_soon(self._quit, connection)

    # -- connections ---------------------------------------------------------------

    def _take_idle(self) -> _PooledConnection | None:
        now = time.monotonic()
        for connection in reversed(self._connections):
            if not connection.is_available():
                continue
            if connection.accepting:
                connection.accepting = False
                connection.users += 1
                connection.messages_started += 1
                return connection
            if connection.has_expired(now, self.idle_timeout, self.max_messages_per_connection):
                self._retire(connection)
                continue
            if connection.smtp.has_unsolicited_input():
                # The server closed it while idle (or said 421): a write would seem
                # to succeed, and a pipelined message's fate would be unknown.
                self._drop(connection)
                continue
            connection.users += 1
            connection.messages_started += 1
            return connection
        return None

    def _new_client(self) -> SMTP:
        smtp: SMTP
        if self.lmtp:
            smtp = LMTP(
                self.host,
                self.port or 2003,
                self.local_hostname,
                timeout=self.timeout,
                context=self.context,
                proxy=self._proxy_url,
            )
        elif self.tls == "implicit":
            smtp = SMTP_SSL(
                self.host,
                self.port,
                self.local_hostname,
                self.timeout,
                context=self.context,
                proxy=self._proxy_url,
            )
        else:
            smtp = SMTP(
                self.host,
                self.port,
                self.local_hostname,
                self.timeout,
                context=self.context,
                proxy=self._proxy_url,
            )
        smtp.data_timeout = self.data_timeout
        smtp.server_hostname = self.server_hostname
        smtp.hooks = self.hooks
        return smtp

    async def _connect(self, connection: _PooledConnection) -> None:
        smtp = connection.smtp
        reply = await smtp.connect(self.host, smtp.default_port if not self.port else self.port)
        if reply.code != 220:
            await smtp.close()
            raise SMTPConnectError(reply.code, reply.message)
        await smtp.ehlo_or_helo_if_needed()
        if self.tls in ("starttls", "opportunistic"):
            if smtp.has_extn("starttls"):
                await smtp.starttls()
                await smtp.ehlo_or_helo_if_needed()
            elif self.tls == "starttls":
                await smtp.close()
                raise SMTPNotSupportedError(
                    f"{self.host} does not offer STARTTLS, and tls='starttls' requires it "
                    "(use tls='opportunistic' to send in plaintext when it is missing)"
                )
        if self._username is not None:
            encrypted = smtp.is_tls
            # Through a proxy, the path is local only if the proxy is local too.
            local = _is_local(self.host) and (self.proxy is None or _is_local(self.proxy.host))
            if not (encrypted or local or self._allow_insecure_auth):
                await smtp.close()
                raise SMTPNotSupportedError(
                    f"refusing to send credentials to {self.host} over a connection that is "
                    "not encrypted (pass allow_insecure_auth=True to allow it)"
                )
            if self._oauth_token is not None:
                await smtp.login_oauth(self._username, self._oauth_token)
            else:
                assert self._password is not None
                await smtp.login(self._username, self._password)

    async def _acquire(self) -> _PooledConnection:
        if self._closing:
            raise SMTPServerDisconnected("the pool is closed")
        if self._task_group is None:
            # Without the block nothing would ever QUIT or close the connections.
            raise RuntimeError("use the pool as `async with SMTPPool(...) as pool:`")
        try:
            try:
                self._slots.acquire_nowait()
            except anyio.WouldBlock:
                logger.debug("%s: waiting for a free connection", self.host)
                with anyio.fail_after(self.timeout):
                    await self._slots.acquire()
        except TimeoutError:
            raise SMTPTimeoutError(
                f"no connection to {self.host} became free within {self.timeout} s"
            ) from None
        try:
            connection = self._take_idle()
            if connection is None:
                self._opened += 1
                connection = _PooledConnection(self._new_client(), self._opened)
                connection.users = 1
                connection.messages_started = 1
                self._connections.append(connection)
                try:
                    await self._connect(connection)
                except BaseException:
                    self._drop(connection)
                    raise
                logger.debug("%s: opened %r (tls=%s)", self.host, connection, self.tls)
            return connection
        except BaseException:
            self._slots.release()
            raise

    def _hand_off(self, connection: _PooledConnection, tx: _Transaction) -> None:
        """The transaction's final dot has left: its slot, and its connection, may
        go to the next transaction while it reads its reply."""
        if connection.messages_started < self.max_messages_per_connection:
            connection.accepting = True
        self._slots.release()

    def _release(
        self, connection: _PooledConnection, tx: _Transaction | None, *, healthy: bool
    ) -> None:
        connection.users -= 1
        if not connection.users:
            connection.accepting = False
            connection.idle_since = time.monotonic()
        if not healthy or connection.smtp.is_closed:
            self._drop(connection)
        elif not connection.users and connection.messages_started >= (
            self.max_messages_per_connection
        ):
            self._retire(connection)
        if tx is None or not tx.handed_off:
            self._slots.release()

    def _drop(self, connection: _PooledConnection) -> None:
        """Forget a connection that failed; it is closed without QUIT."""
        logger.debug("%s: dropping %r", self.host, connection)
        if connection in self._connections:
            self._connections.remove(connection)
        connection.closed = True
        if self._task_group is not None:
            self._task_group.start_soon(connection.smtp.close)

    async def _wait_for_rate(self) -> None:
        if self.rate_limit is None:
            return
        now = anyio.current_time()
        start = max(now, self._next_send_at)
        self._next_send_at = start + 1 / self.rate_limit
        if start > now:
            logger.debug("%s: rate limit, waiting %.3f s", self.host, start - now)
            await anyio.sleep(start - now)

    # -- sending -------------------------------------------------------------------

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
        """Send one message through a pooled connection: SMTP.sendmail's results and
        exceptions, plus one automatic retry where the server cannot have the message."""
        extras = MailExtras(dsn, require_tls, strict_8bit)
        recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        delivery = self._deliver(
            from_addr,
            recipients,
            as_body(msg),
            mail_options,
            rcpt_options,
            progress=progress,
            extras=extras,
        )
        if self.hooks is None:
            return await delivery
        return await observe_message(self.hooks, delivery, from_addr, recipients)

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
        # Whether the server has SMTPUTF8 is known only on a connection; flatten for
        # it, and let the server refuse if it cannot take it.
        envelope = flatten_message(
            msg, from_addr, to_addrs, mail_options, server_has_smtputf8=True
        )
        delivery = self._deliver(
            envelope.sender,
            envelope.recipients,
            as_body(envelope.data),
            envelope.mail_options,
            rcpt_options,
            progress=progress,
            needs_smtputf8="SMTPUTF8" in envelope.mail_options,
            extras=extras,
        )
        if self.hooks is None:
            return await delivery
        return await observe_message(self.hooks, delivery, envelope.sender, envelope.recipients)

    async def _deliver(
        self,
        from_addr: str,
        recipients: list[str],
        body: MessageBody,
        mail_options: Sequence[str],
        rcpt_options: Sequence[str],
        *,
        progress: ProgressCallback | None = None,
        needs_smtputf8: bool = False,
        extras: MailExtras = NO_EXTRAS,
    ) -> SendResult:
        refused: dict[str, tuple[int, bytes]] = {}
        pending = recipients
        result: SendResult | None = None
        while True:
            try:
                if result is not None:
                    body.rewind()  # a follow-up transaction sends the body again
                result = await self._transaction_with_retry(
                    from_addr,
                    pending,
                    body,
                    mail_options,
                    rcpt_options,
                    progress,
                    needs_smtputf8,
                    extras,
                )
            except SMTPRecipientsRefused as exc:
                if result is None:
                    raise
                # A follow-up transaction for 452'd recipients refused them all.
                refused.update(exc.recipients)
                return SendResult(refused, result.reply)
            except SMTPResponseException as exc:
                if result is None:
                    raise
                # The message went to the first recipients; the follow-up failed.
                refused.update(
                    (addr, (exc.smtp_code, _as_bytes(exc.smtp_error))) for addr in pending
                )
                return SendResult(refused, result.reply)
            except BaseException as exc:
                if result is not None:
                    accepted = [
                        addr for addr in recipients if addr not in refused and addr not in pending
                    ]
                    exc.add_note(f"the message had already been accepted for {accepted}")
                raise
            # RFC 5321 4.5.3.1.10: 452 "too many recipients" means "send the rest in
            # another transaction", as long as this one made progress.
            deferred = [addr for addr in pending if result.get(addr, (0,))[0] == 452]
            refused.update((addr, value) for addr, value in result.items() if addr not in deferred)
            if not deferred or len(deferred) == len(pending):
                refused.update((addr, result[addr]) for addr in deferred)
                return SendResult(refused, result.reply)
            pending = deferred

    async def _transaction_with_retry(
        self,
        from_addr: str,
        recipients: list[str],
        body: MessageBody,
        mail_options: Sequence[str],
        rcpt_options: Sequence[str],
        progress: ProgressCallback | None,
        needs_smtputf8: bool,
        extras: MailExtras = NO_EXTRAS,
    ) -> SendResult:
        for attempt in (1, 2):
            await self._wait_for_rate()
            connection = await self._acquire()
            smtp = connection.smtp
            tx: _Transaction | None = None
            healthy = False
            try:
                if needs_smtputf8 and not smtp.has_extn("smtputf8"):
                    raise SMTPNotSupportedError(
                        "One or more source or delivery addresses require internationalized "
                        "email support, but the server does not advertise the required "
                        "SMTPUTF8 capability"
                    )
                tx = _Transaction()
                tx.on_handoff = functools.partial(self._hand_off, connection, tx)
                result = await smtp._sendmail_with_lock(
                    tx, from_addr, recipients, body, mail_options, rcpt_options, progress, extras
                )
                connection.messages_sent += 1
                healthy = True
                return result
            except BaseException as exc:
                healthy = _left_clean(smtp, exc)
                if attempt == 1 and body.replayable and _server_cannot_have_it(tx, exc):
                    body.rewind()
                    continue
                raise
            finally:
                self._release(connection, tx, healthy=healthy)
        raise AssertionError("unreachable")  # pragma: no cover


def _as_bytes(text: bytes | str) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8", "replace")


def _left_clean(smtp: SMTP, exc: BaseException) -> bool:
    """Whether a connection is provably in step after this failure: a refusal the
    client answered with RSET, or a check that sent nothing."""
    if smtp.is_closed:
        return False
    if isinstance(exc, SMTPRecipientsRefused):
        return all(code != 421 for code, _ in exc.recipients.values())
    if isinstance(exc, (SMTPSenderRefused, SMTPDataError)):
        return exc.smtp_code != 421
    return isinstance(exc, (SMTPNotSupportedError, ValueError))


def _server_cannot_have_it(tx: _Transaction | None, exc: BaseException) -> bool:
    """Whether the failed transaction may be sent again: only where the connection
    failed, or the server said 421, before the end of the data left."""
    if isinstance(exc, SMTPDeliveryUnknownError):
        return False
    # A 421 to MAIL or RCPT means the server is closing without a transaction: it
    # cannot have the message, even if a pipelined BDAT LAST had already left.
    if isinstance(exc, SMTPRecipientsRefused):
        return any(code == 421 for code, _ in exc.recipients.values())
    if isinstance(exc, SMTPSenderRefused):
        return exc.smtp_code == 421
    if tx is not None and tx.end_of_data_sent:
        return False
    if isinstance(exc, SMTPResponseException):
        return exc.smtp_code == 421
    return isinstance(exc, SMTPServerDisconnected)


#: The keywords of ``send`` that are the message's, not the pool's.
_MESSAGE_KEYWORDS = ("dsn", "require_tls", "strict_8bit")


async def send(
    msg: email.message.Message | bytes | str,
    host: str,
    port: int = 0,
    *,
    from_addr: str | None = None,
    to_addrs: str | Sequence[str] | None = None,
    mail_options: Sequence[str] = (),
    rcpt_options: Sequence[str] = (),
    **pool_options: Any,
) -> SendResult:
    """Send one message over one fresh connection, with the pool's TLS policy,
    retry and 452 rules: the one-call way for a web handler. ``dsn``,
    ``require_tls`` and ``strict_8bit`` go to the message, the rest to the pool."""
    extras = {name: pool_options.pop(name) for name in _MESSAGE_KEYWORDS if name in pool_options}
    async with SMTPPool(host, port, max_connections=1, **pool_options) as pool:
        if isinstance(msg, email.message.Message):
            return await pool.send_message(
                msg, from_addr, to_addrs, mail_options, rcpt_options, **extras
            )
        if from_addr is None or to_addrs is None:
            raise ValueError("from_addr and to_addrs are required for a bytes or str message")
        return await pool.sendmail(from_addr, to_addrs, msg, mail_options, rcpt_options, **extras)
