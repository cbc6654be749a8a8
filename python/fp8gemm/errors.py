"""Exceptions: one per ``fp8gemm_status``, all subclasses of :class:`Error`.

Every failure of the C library raises the subclass for its status, with the
library's message (which names the argument and value at fault). Checks the
Python layer makes before calling the library (a wrong dtype, a row that is
not contiguous, a shape that does not match) raise the same classes, so a
caller handles a bad argument the same way wherever it was caught.

Each class also derives from the closest built-in exception
(``InvalidArgumentError`` is a ``ValueError``, ``IOError_`` an ``OSError``,
...), so ``except ValueError`` keeps working around fp8gemm calls.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """``fp8gemm_status``."""

    OK = 0
    INVALID_ARGUMENT = 1
    UNSUPPORTED = 2
    OUT_OF_MEMORY = 3
    LAYOUT_MISMATCH = 4
    IO = 5
    PARSE = 6
    BACKEND = 7
    NO_DEVICE = 8
    INTERNAL = 9


class Error(RuntimeError):
    """An fp8gemm call failed.

    Attributes:
        status: the library's status code (a :class:`Status`).
        message: the library's message for the failure.
    """

    status: Status = Status.INTERNAL

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = Status(status)

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(Error, ValueError):
    """A null pointer, a bad size, a bad value, a wrong dtype or stride."""

    status = Status.INVALID_ARGUMENT


class UnsupportedError(Error, NotImplementedError):
    """Valid, but not implemented for this backend or layout."""

    status = Status.UNSUPPORTED


class OutOfMemoryError(Error, MemoryError):
    status = Status.OUT_OF_MEMORY


class LayoutMismatchError(Error, ValueError):
    """Data in one layout handed to code for another."""

    status = Status.LAYOUT_MISMATCH


class IOError_(Error, OSError):  # noqa: N801 (the built-in name is taken)
    """A file could not be read or written."""

    status = Status.IO

    def __str__(self) -> str:  # OSError would format (errno, strerror)
        return self.message


class ParseError(Error, ValueError):
    """A file's content is malformed."""

    status = Status.PARSE


class BackendError(Error):
    """The backend (CUDA) reported an error."""

    status = Status.BACKEND


class NoDeviceError(Error):
    """The asked backend is not built in, or this machine has no device for it."""

    status = Status.NO_DEVICE


class InternalError(Error):
    status = Status.INTERNAL


class LibraryNotFoundError(ImportError):
    """libfp8gemm could not be found or does not match this package."""


_CLASS_FOR_STATUS: dict[int, type[Error]] = {
    cls.status: cls
    for cls in (
        InvalidArgumentError,
        UnsupportedError,
        OutOfMemoryError,
        LayoutMismatchError,
        IOError_,
        ParseError,
        BackendError,
        NoDeviceError,
        InternalError,
    )
}


def error_for_status(status: int, message: str, status_name: str = "") -> Error:
    """The exception for a library status, carrying its message."""
    cls = _CLASS_FOR_STATUS.get(status)
    if cls is None:
        return Error(f"{message} (status {status} {status_name})".strip(), Status.INTERNAL)
    return cls(message, status)
