"""Exceptions of ipsecfast. A leaf module: anyone may import it.

Programmer errors are the builtin ``TypeError`` / ``ValueError``; bad packets never
raise (they become a per-packet status). What is left is here.
"""

from __future__ import annotations


class IpsecError(Exception):
    """Base class of every ipsecfast error."""


class ConfigError(IpsecError, ValueError):
    """A configuration line IOS would reject, with its line number and an IOS-style caret.

    ``str(err)`` looks like::

        line 12: access-list 100 permit ipp any any
                                        ^
        % Invalid input detected at '^' marker. (expected a protocol name or number)
    """

    def __init__(
        self,
        message: str,
        *,
        lineno: int | None = None,
        line: str | None = None,
        column: int | None = None,
        source: str | None = None,
    ) -> None:
        self.message = message
        self.lineno = lineno
        self.line = line
        self.column = column
        self.source = source
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.source:
            where = f"{self.source}:"
        if self.lineno is not None:
            where += f"line {self.lineno}: " if not self.source else f"{self.lineno}: "
        elif where:
            where += " "
        if self.line is None:
            return f"{where}{self.message}"
        text = f"{where}{self.line}"
        if self.column is not None:
            caret = " " * (len(where) + self.column) + "^"
            return f"{text}\n{caret}\n% Invalid input detected at '^' marker. ({self.message})"
        return f"{text}\n% {self.message}"


class UnsupportedTransform(IpsecError, ValueError):
    """A transform name or combination that ipsecfast (or the local OpenSSL) cannot run."""


class PcapError(IpsecError):
    """A capture file that is truncated or corrupt; the message names the byte offset."""


class InternalError(IpsecError):
    """OpenSSL failed where it should not; carries the drained OpenSSL error queue."""
