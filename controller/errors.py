"""Errors the controller raises in its domain code, each saying whose fault it is.

The gRPC layer maps every class here to one status code (server.py, ``STATUS_FOR``); domain
code never imports grpc.
"""
from __future__ import annotations


class FarmError(Exception):
    """Base of every error the controller reports to a caller."""


class NotFound(FarmError):
    """The caller named something the controller does not have."""


class InvalidArgument(FarmError):
    """The request itself is wrong: the caller must change it."""


class FailedPrecondition(FarmError):
    """The request is well formed but does not fit the current state (e.g. cancel a finished job)."""


class ResourceExhausted(FarmError):
    """The request exceeds a limit the operator configured."""


class Unavailable(FarmError):
    """The controller cannot serve the call now (shutting down); retrying later may succeed."""


class Overloaded(Unavailable):
    """The controller refused the call before doing anything: its database work already waits
    too long. The same call may be sent again as it is (nothing was stored); ``retry_after``
    says when."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CallerGaveUp(FarmError):
    """The caller's deadline passed while the call waited for a database thread: the work was
    not started (nobody would read its answer, and a lease taken for nobody would sit idle
    until it expired)."""


class AmbiguousId(InvalidArgument):
    """A shortened id (a prefix, as git accepts) matches more than one thing; the message lists them."""


class CannotStart(Exception):
    """The controller cannot start with what it was given: a database it cannot open or reach, an
    artifact directory it cannot create, a remote-write URL that is none, an address it cannot
    listen on. Not an RPC error: raised by ``Controller(...)`` and ``Controller.start`` before
    anything is served, so that a command says what to change and stops, nothing half started."""


class CannotListen(CannotStart, OSError):
    """An address the controller was told to serve on (gRPC or metrics) is taken or not available.

    Not an RPC error: raised by ``Controller.start`` so that a command can say which address and
    stop, instead of a second farm sharing the port with the first."""


class DatabaseInUse(CannotListen):
    """The SQLite database is served by another controller process. One SQLite file takes one
    controller (replicas share a PostgreSQL database); a command stops as it does for an address
    in use, and the controller already serving is left alone."""


class Unauthenticated(FarmError):
    """The call carries no credential this controller accepts (none, unknown, expired, revoked)."""


class PermissionDenied(FarmError):
    """The caller is known but may not do this (a role too low, another project, another agent)."""
