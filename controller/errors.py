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


class AmbiguousId(InvalidArgument):
    """A shortened id (a prefix, as git accepts) matches more than one thing; the message lists them."""


class CannotListen(OSError):
    """An address the controller was told to serve on (gRPC or metrics) is taken or not available.

    Not an RPC error: raised by ``Controller.start`` so that a command can say which address and
    stop, instead of a second farm sharing the port with the first."""


class Unauthenticated(FarmError):
    """The call carries no credential this controller accepts (none, unknown, expired, revoked)."""


class PermissionDenied(FarmError):
    """The caller is known but may not do this (a role too low, another project, another agent)."""
