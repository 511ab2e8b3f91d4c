"""The core's two kinds of failure (after h11's Local/RemoteProtocolError).

Misuse by the caller and nonsense from the server are different things: the first
leaves the session usable, the second means the client can no longer be sure it is
in step with the server, so the session is poisoned. The client translates both
into the smtplib-shaped exceptions at a single boundary.
"""

from __future__ import annotations

__all__ = ["ForbiddenCharacterError", "LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base class of the errors raised by the sans-IO core."""


class LocalProtocolError(ProtocolError):
    """The caller asked for something the protocol does not allow in this state.

    Nothing was sent, and the session is unchanged.
    """


class ForbiddenCharacterError(LocalProtocolError, ValueError):
    """A command argument holds CR, LF or NUL, which could smuggle a command."""


class RemoteProtocolError(ProtocolError):
    """The server sent something that is not valid SMTP at this point.

    The session is closed: after nonsense, no later reply can be trusted to belong
    to the command it seems to answer. ``code`` is what smtplib would report: 500
    for a line or reply over the limits, -1 for anything it could not parse.
    """

    def __init__(self, message: str, code: int = -1) -> None:
        super().__init__(message)
        self.code = code
