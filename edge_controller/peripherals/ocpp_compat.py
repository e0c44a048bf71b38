"""A typed view of the parts of the `ocpp` package (OCPP 1.6J) that smartpole uses.

The package ships without type information; mypy --strict sees the declarations
below, the interpreter imports the real thing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

OCPP_VERSION = "1.6"
SUBPROTOCOL = "ocpp1.6"

if TYPE_CHECKING:

    class ChargePoint:
        """ocpp.v16.ChargePoint: routes CALLs to @on handlers, sends CALLs with call()."""

        id: str
        _connection: Any

        def __init__(self, id: str, connection: Any, response_timeout: int = 30,
                     logger: Any = None) -> None: ...
        async def start(self) -> None: ...
        async def route_message(self, raw_msg: str) -> None: ...
        async def call(self, payload: Any, suppress: bool = True, unique_id: str | None = None,
                       skip_schema_validation: bool = False) -> Any: ...

    def on(action: str, *, skip_schema_validation: bool = False) -> Callable[[F], F]: ...

    class OCPPError(Exception):
        code: str
        description: str
        details: dict[str, Any]

    class MessageType:
        Call: int
        CallResult: int
        CallError: int

    class Message:
        message_type_id: int
        unique_id: str
        action: str
        payload: dict[str, Any]
        error_code: str
        error_description: str

    def unpack(msg: str | bytes) -> Message: ...

    class Validator:
        def iter_errors(self, instance: Any) -> Any: ...

    def get_validator(message_type_id: int, action: str, ocpp_version: str) -> Validator: ...

    call: Any  # ocpp.v16.call: request payload dataclasses (BootNotification, ...)
    call_result: Any  # ocpp.v16.call_result: response payload dataclasses
else:
    from ocpp.exceptions import OCPPError
    from ocpp.messages import MessageType, get_validator, unpack
    from ocpp.routing import on
    from ocpp.v16 import ChargePoint, call, call_result

__all__ = ["OCPP_VERSION", "SUBPROTOCOL", "ChargePoint", "MessageType", "OCPPError", "call",
           "call_result", "get_validator", "on", "unpack"]
