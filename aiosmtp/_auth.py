"""The AUTH exchanges that need more than smtplib's authobject: SCRAM and OAuth.

``SMTP.auth()`` runs smtplib's shape of exchange (an authobject answers each 334).
SCRAM does not fit it: the client must check the server's last message before it
may believe a 235, and a wrong server signature must close the connection (the
server thinks the client is logged in; the client knows it talked to an impostor,
or through one). OAuth must complete an error challenge and retry with a fresh
token. Both run here, on the SMTP object's own command loop, with its lock held by
the caller; the protocol (what to say) is in ``aiosmtp.protocol``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from .errors import (
    SMTPAuthenticationError,
    SMTPNotSupportedError,
    SMTPResponseException,
)
from .protocol import (
    OAUTH_MECHANISMS,
    OAUTHBEARER_ERROR_ACK,
    Command,
    RemoteProtocolError,
    Reply,
    ScramClient,
    ScramError,
    ScramServerError,
    State,
    decode_challenge,
    encode_response,
    oauthbearer_response,
    xoauth2_response,
)

if TYPE_CHECKING:
    from .client import SMTP

__all__ = ["TokenSource", "oauth_login", "scram_login"]

#: An OAuth 2 access token, or an async callable that fetches a fresh one.
TokenSource = str | Callable[[], Awaitable[str]]


async def _challenge(smtp: SMTP, reply: Reply) -> bytes:
    try:
        return decode_challenge(reply.message)
    except RemoteProtocolError as exc:
        await smtp._abort()
        raise SMTPResponseException(exc.code, str(exc)) from exc


async def _cancel(smtp: SMTP) -> Reply | None:
    """RFC 4954 section 4: "*" cancels the exchange and keeps the session."""
    with anyio.CancelScope(shield=True):
        if smtp._conn is not None and smtp._conn.state is State.AUTH:
            return await smtp._command(Command.auth_response("*"))
    return None


async def _untrusted(smtp: SMTP, code: int, mechanism: str, why: str) -> SMTPAuthenticationError:
    """Close the connection: the server may consider the client logged in, but the
    client cannot believe it is talking to the server that holds its password."""
    await smtp._abort()
    return SMTPAuthenticationError(code, f"{mechanism}: {why}; connection closed".encode())


async def scram_login(
    smtp: SMTP,
    mechanism: str,
    user: str,
    password: str,
    channel_binding: bytes | None,
    initial_response_ok: bool,
) -> Reply:
    """One SCRAM exchange (RFC 5802 section 5, over RFC 4954's AUTH).

    Raises SASLprepError (a ValueError) before anything is sent when the user name
    or password cannot be prepared, SMTPAuthenticationError when the server refuses
    the credentials or fails a check (the server signature above all: then the
    connection is closed).
    """
    scram = ScramClient(mechanism, user, password, channel_binding=channel_binding)
    first = encode_response(scram.client_first(), initial=True)
    if initial_response_ok:
        reply = await smtp._command(Command.make("AUTH", f"{mechanism} {first}", sensitive=True))
    else:
        reply = await smtp._command(Command.make("AUTH", mechanism))
        if reply.code == 334:
            # An (empty) challenge asks for the client-first-message.
            reply = await smtp._command(Command.auth_response(first))
    if reply.code == 503:
        return reply  # already authenticated, as login() has always returned it
    if reply.code == 235:
        raise await _untrusted(smtp, 235, mechanism, "the server accepted before any proof")
    if reply.code != 334:
        raise SMTPAuthenticationError(reply.code, reply.message)

    server_first = await _challenge(smtp, reply)
    try:
        # PBKDF2 with the server's iteration count: off the event loop.
        final = await anyio.to_thread.run_sync(scram.client_final, server_first)
    except ScramError as exc:
        cancelled = await _cancel(smtp)
        code = reply.code if cancelled is None else cancelled.code
        raise SMTPAuthenticationError(code, f"{mechanism}: {exc}".encode()) from exc
    except BaseException:
        await _cancel(smtp)
        raise
    reply = await smtp._command(Command.auth_response(encode_response(final)))

    if reply.code == 334:
        # RFC 4954 section 4: the server-final-message comes as one more challenge,
        # answered by an empty line.
        server_final = await _challenge(smtp, reply)
        try:
            scram.verify_server_final(server_final)
        except ScramServerError as exc:
            outcome = await smtp._command(Command.auth_response(""))
            if outcome.code in (235, 503):
                raise await _untrusted(
                    smtp, outcome.code, mechanism, f"the server said {exc} and then accepted"
                ) from exc
            text = outcome.message + f" ({mechanism}: {exc.server_error})".encode()
            raise SMTPAuthenticationError(outcome.code, text) from exc
        except ScramError as exc:
            raise await _untrusted(smtp, reply.code, mechanism, str(exc)) from exc
        reply = await smtp._command(Command.auth_response(""))
        if reply.code == 235:
            return reply
        raise SMTPAuthenticationError(reply.code, reply.message)
    if reply.code == 235:
        # Accepted, but without the server-final-message: nothing proves the
        # server knows the password (it could accept anyone).
        raise await _untrusted(smtp, 235, mechanism, "the server sent no server signature")
    raise SMTPAuthenticationError(reply.code, reply.message)


def choose_oauth_mechanism(advertised: list[str], mechanism: str | None) -> str:
    if mechanism is not None:
        mechanism = mechanism.upper()
        if mechanism not in OAUTH_MECHANISMS:
            raise ValueError(
                f"login_oauth() knows {' and '.join(OAUTH_MECHANISMS)}, not {mechanism}"
            )
        if mechanism not in advertised:
            raise SMTPNotSupportedError(f"the server does not offer AUTH {mechanism}")
        return mechanism
    for name in OAUTH_MECHANISMS:
        if name in advertised:
            return name
    raise SMTPNotSupportedError(
        "the server offers no OAuth mechanism (OAUTHBEARER or XOAUTH2): "
        f"{' '.join(advertised) or 'none'}"
    )


async def _fetch(token: TokenSource) -> str:
    value = token if isinstance(token, str) else await token()
    if not isinstance(value, str):
        raise TypeError(f"an OAuth token source must give a str, not {type(value).__name__}")
    return value


async def _oauth_attempt(
    smtp: SMTP, mechanism: str, user: str, token: str
) -> tuple[Reply, bytes | None]:
    """One AUTH exchange: the final reply, and the error challenge's text if any."""
    if mechanism == "OAUTHBEARER":
        host = smtp.server_hostname or smtp._host
        initial = oauthbearer_response(user, token, host or None, smtp._port or None)
    else:
        initial = xoauth2_response(user, token)
    encoded = encode_response(initial, initial=True)
    reply = await smtp._command(Command.make("AUTH", f"{mechanism} {encoded}", sensitive=True))
    if reply.code != 334:
        return reply, None
    # The error challenge: base64 JSON with the status (RFC 7628 section 3.2.2).
    # OAUTHBEARER requires a ^A to end the exchange (section 3.2.3); for XOAUTH2,
    # Google's and Microsoft's documents ask for an empty line.
    status = await _challenge(smtp, reply)
    ack = OAUTHBEARER_ERROR_ACK if mechanism == "OAUTHBEARER" else b""
    reply = await smtp._command(Command.auth_response(encode_response(ack)))
    if reply.code == 334:
        # A server that will not stop challenging: give up on this exchange.
        cancelled = await _cancel(smtp)
        reply = cancelled or reply
    return reply, status


async def oauth_login(smtp: SMTP, user: str, token: TokenSource, mechanism: str) -> Reply:
    """OAUTHBEARER or XOAUTH2; with a callable ``token``, one retry with a fresh
    token after a refusal. The token never reaches a log or an exception."""
    attempts = 1 if isinstance(token, str) else 2
    reply: Reply | None = None
    status: bytes | None = None
    for _ in range(attempts):
        value = await _fetch(token)
        reply, status = await _oauth_attempt(smtp, mechanism, user, value)
        if reply.code in (235, 503):
            return reply
        if smtp._conn is None:
            break  # 421, or lost: no second try on this connection
    assert reply is not None
    text = reply.message
    if status:
        text += b"\nserver status: " + status
    raise SMTPAuthenticationError(reply.code, text)
