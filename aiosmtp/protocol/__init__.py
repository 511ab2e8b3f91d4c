"""The sans-IO SMTP core: commands to bytes, bytes to replies, and the session state.

Nothing here performs I/O or imports an event loop, a socket, ``ssl`` or ``email``;
it runs the same under asyncio, trio, a blocking socket, or a test feeding bytes.
"""

from __future__ import annotations

from ._commands import Command, CommandKind, check_argument
from ._connection import NEED_DATA, NeedData, SMTPConnection
from ._data import DataEncoder, LineEndingNormalizer, normalize_line_endings
from ._dsn import DSN, utf8_addr_xtext, xtext_decode, xtext_encode
from ._ehlo import parse_ehlo_features
from ._errors import (
    ForbiddenCharacterError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from ._mailparams import (
    EightBitUnknown,
    EnvelopePlan,
    ExtensionNotOffered,
    MessageTooLarge,
    plan_envelope,
    size_limit,
)
from ._receivebuffer import MAX_LINE_LENGTH, MAX_REPLY_LINES, ReplyParser
from ._reply import Reply
from ._sasl import (
    OAUTH_MECHANISMS,
    OAUTHBEARER_ERROR_ACK,
    PASSWORD_MECHANISMS,
    CredentialError,
    choose_password_mechanisms,
    cram_md5_response,
    decode_challenge,
    encode_response,
    login_response,
    oauthbearer_response,
    plain_response,
    xoauth2_response,
)
from ._saslprep import SASLprepError, saslprep
from ._scram import (
    CHANNEL_BINDING_TYPE,
    SCRAM_MECHANISMS,
    ScramClient,
    ScramError,
    ScramServerError,
    ScramVerificationError,
    tls_server_end_point,
)
from ._state import State

__all__ = [
    "CHANNEL_BINDING_TYPE",
    "DSN",
    "MAX_LINE_LENGTH",
    "MAX_REPLY_LINES",
    "NEED_DATA",
    "OAUTHBEARER_ERROR_ACK",
    "OAUTH_MECHANISMS",
    "PASSWORD_MECHANISMS",
    "SCRAM_MECHANISMS",
    "Command",
    "CommandKind",
    "CredentialError",
    "DataEncoder",
    "EightBitUnknown",
    "EnvelopePlan",
    "ExtensionNotOffered",
    "ForbiddenCharacterError",
    "LineEndingNormalizer",
    "LocalProtocolError",
    "MessageTooLarge",
    "NeedData",
    "ProtocolError",
    "RemoteProtocolError",
    "Reply",
    "ReplyParser",
    "SASLprepError",
    "SMTPConnection",
    "ScramClient",
    "ScramError",
    "ScramServerError",
    "ScramVerificationError",
    "State",
    "check_argument",
    "choose_password_mechanisms",
    "cram_md5_response",
    "decode_challenge",
    "encode_response",
    "login_response",
    "normalize_line_endings",
    "oauthbearer_response",
    "parse_ehlo_features",
    "plain_response",
    "plan_envelope",
    "saslprep",
    "size_limit",
    "tls_server_end_point",
    "utf8_addr_xtext",
    "xoauth2_response",
    "xtext_decode",
    "xtext_encode",
]
