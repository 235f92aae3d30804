"""The base of the server's interceptors (authorisation in server.py, metrics in metrics.py)."""
from __future__ import annotations

from typing import Any, Dict, Tuple

import grpc


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the handler of each method once, in ``wrap``, and hands out that wrapper at every
    call: building one costs closures and a handler object, and a thousand agents make hundreds
    of calls a second."""

    def __init__(self) -> None:
        # method -> (the handler wrapped, its wrapper)
        self._wrapped: Dict[str, Tuple[Any, Any]] = {}

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method or ""
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def wrap(self, handler: Any, method: str) -> Any:
        """The handler to serve ``method`` with, around the servicer's ``handler``."""
        raise NotImplementedError
