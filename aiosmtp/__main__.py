"""The command line: ``python -m aiosmtp send|check|demo`` (also the ``aiosmtp``
script); the commands live in ``aiosmtp._cli``."""

from __future__ import annotations

import sys

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
