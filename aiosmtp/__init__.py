"""aiosmtp: an SMTP client for asyncio and trio, with smtplib's API.

Names are loaded lazily (PEP 562): ``import aiosmtp.protocol`` must work with no
anyio installed, so this module imports nothing of the client until asked.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

if TYPE_CHECKING:
    from .client import LMTP, SMTP, SMTP_SSL, SendResult
    from .errors import (
        SMTPAuthenticationError,
        SMTPCertificateError,
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
        SMTPTLSError,
    )
    from .hooks import Hooks
    from .pool import SMTPPool, send
    from .protocol import DSN, Reply

_LAZY = {
    "SMTP": "client",
    "SMTP_SSL": "client",
    "LMTP": "client",
    "SendResult": "client",
    "SMTPPool": "pool",
    "Hooks": "hooks",
    "send": "pool",
    "Reply": "protocol",
    "DSN": "protocol",
    "SMTPException": "errors",
    "SMTPNotSupportedError": "errors",
    "SMTPServerDisconnected": "errors",
    "SMTPResponseException": "errors",
    "SMTPSenderRefused": "errors",
    "SMTPRecipientsRefused": "errors",
    "SMTPDataError": "errors",
    "SMTPDeliveryUnknownError": "errors",
    "SMTPDeliveryUnknownResponseError": "errors",
    "SMTPDeliveryUnknownTimeoutError": "errors",
    "SMTPConnectError": "errors",
    "SMTPHeloError": "errors",
    "SMTPAuthenticationError": "errors",
    "SMTPTimeoutError": "errors",
    "SMTPTLSError": "errors",
    "SMTPCertificateError": "errors",
}

__all__ = [
    "DSN",
    "LMTP",
    "SMTP",
    "SMTP_SSL",
    "Hooks",
    "Reply",
    "SMTPAuthenticationError",
    "SMTPCertificateError",
    "SMTPConnectError",
    "SMTPDataError",
    "SMTPDeliveryUnknownError",
    "SMTPDeliveryUnknownResponseError",
    "SMTPDeliveryUnknownTimeoutError",
    "SMTPException",
    "SMTPHeloError",
    "SMTPNotSupportedError",
    "SMTPPool",
    "SMTPRecipientsRefused",
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPTLSError",
    "SMTPTimeoutError",
    "SendResult",
    "__version__",
    "send",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiosmtp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
