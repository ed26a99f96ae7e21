"""A central system written the way the ``ocpp`` library documents it.

This follows the central-system example of mobilityhouse/ocpp (README and
``examples/v16/central_system.py``, ``examples/v201/central_system.py``): a
``websockets`` server, one ``ChargePoint`` subclass per OCPP version with
``@on`` handlers returning ``call_result`` dataclasses, and one
``ChargePoint(...).start()`` per connection. The library validates every
payload against the OCA schemas (``jsonschema``), like a real deployment.
Plain ``asyncio.run`` as in the examples (``--uvloop`` to compare).

    python -m bench.anchors.ocpp_csms --port 9000
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16Base
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v16.enums import AuthorizationStatus, RegistrationStatus
from ocpp.v201 import ChargePoint as ChargePoint201Base
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from ocpp.v201.enums import AuthorizationStatusEnumType, RegistrationStatusEnumType

from bench.anchors._common import announce, parser, raise_nofile


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ChargePoint16(ChargePoint16Base):  # type: ignore[misc]
    @on(Action16.boot_notification)
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str,
                             **kwargs: Any) -> Any:
        return result16.BootNotification(current_time=_now(), interval=300,
                                         status=RegistrationStatus.accepted)

    @on(Action16.heartbeat)
    def on_heartbeat(self) -> Any:
        return result16.Heartbeat(current_time=_now())

    @on(Action16.status_notification)
    def on_status_notification(self, **kwargs: Any) -> Any:
        return result16.StatusNotification()

    @on(Action16.meter_values)
    def on_meter_values(self, **kwargs: Any) -> Any:
        return result16.MeterValues()

    @on(Action16.authorize)
    def on_authorize(self, id_tag: str) -> Any:
        return result16.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action16.start_transaction)
    def on_start_transaction(self, **kwargs: Any) -> Any:
        return result16.StartTransaction(transaction_id=1,
                                         id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action16.stop_transaction)
    def on_stop_transaction(self, **kwargs: Any) -> Any:
        return result16.StopTransaction(id_tag_info={"status": AuthorizationStatus.accepted})


class ChargePoint201(ChargePoint201Base):  # type: ignore[misc]
    @on(Action201.boot_notification)
    def on_boot_notification(self, charging_station: Any, reason: str, **kwargs: Any) -> Any:
        return result201.BootNotification(current_time=_now(), interval=300,
                                          status=RegistrationStatusEnumType.accepted)

    @on(Action201.heartbeat)
    def on_heartbeat(self) -> Any:
        return result201.Heartbeat(current_time=_now())

    @on(Action201.status_notification)
    def on_status_notification(self, **kwargs: Any) -> Any:
        return result201.StatusNotification()

    @on(Action201.meter_values)
    def on_meter_values(self, **kwargs: Any) -> Any:
        return result201.MeterValues()

    @on(Action201.authorize)
    def on_authorize(self, id_token: Any, **kwargs: Any) -> Any:
        return result201.Authorize(id_token_info={"status": AuthorizationStatusEnumType.accepted})

    @on(Action201.transaction_event)
    def on_transaction_event(self, **kwargs: Any) -> Any:
        return result201.TransactionEvent()


_CLASSES = {"ocpp1.6": ChargePoint16, "ocpp2.0.1": ChargePoint201}


async def on_connect(websocket: Any) -> None:
    """One charger: check the subprotocol, then run its ChargePoint."""
    if websocket.subprotocol not in _CLASSES:
        # As in the library's example: refuse a connection without a common
        # subprotocol (OCPP-J 1.6 §3.1.2).
        await websocket.close()
        return
    charge_point_id = websocket.request.path.rstrip("/").rsplit("/", 1)[-1]
    charge_point = _CLASSES[websocket.subprotocol](charge_point_id, websocket)
    try:
        await charge_point.start()
    except websockets.exceptions.ConnectionClosed:
        pass


async def serve(host: str, port: int, backlog: int) -> None:
    server = await websockets.serve(on_connect, host, port, subprotocols=list(_CLASSES),
                                    backlog=backlog, open_timeout=30)
    announce("ocpp-library central system", host, port)
    await server.wait_closed()


def main() -> int:
    p = parser("Central system in the style of the ocpp library's examples (anchor).")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio")
    args = p.parse_args()
    raise_nofile()
    # The examples log at INFO; per-message logging would dominate the cost,
    # so keep warnings only, which is how one would run it in production.
    logging.basicConfig(level=logging.WARNING)
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.host, args.port, args.backlog))
    else:
        asyncio.run(serve(args.host, args.port, args.backlog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
