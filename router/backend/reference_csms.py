"""The reference CSMS: a small but correct backend built only on the SDK.

It is the example to read first. It answers every charger-initiated CALL of
OCPP 1.6, 2.0.1 and 2.1 with a schema-valid response, and keeps its little
state in Redis so any number of copies can run in one consumer group:

=================================  ==========================================
``<prefix>:csms:txseq``            counter allocating OCPP 1.6 transaction ids
``<prefix>:csms:tx:<cs>:<txid>``   hash per transaction (id tag, meter, times)
``<prefix>:csms:status:<cs>``      hash: connector → last status (JSON)
``<prefix>:csms:boot:<cs>``        hash: the charger's last BootNotification
=================================  ==========================================

What it deliberately does not do, and answers honestly instead: it has no
certificate authority (``SignCertificate`` → ``Rejected``), no OCSP/CRL access
(certificate status → ``Failed``), no smart charging (EV charging needs →
``Rejected``, 2.1 ``NoChargingProfile``), no vendor extensions
(``DataTransfer`` → ``UnknownVendorId``), no VAT validation service.

Each handler takes a :class:`~router.backend.Message` and returns the
response payload as a dict: the SDK writes it to the right node's out stream
and acknowledges the entry afterwards. Handlers that need no Redis are plain
``def`` functions, run inline in the SDK's batch (docs/backend.md,
"Performance model"); those that keep state are ``async def`` and write
through :class:`StateStore`, which sends the commands of every handler
waiting in one event-loop iteration in one pipelined write.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Collection, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from router.backend.app import BackendApp, direct_url
from router.backend.message import Message
from router.streams._resp import CommandBuffer
from router.streams.connection import RedisConnection, open_connection
from router.streams.errors import RedisReplyError, StreamsError

log = logging.getLogger(__name__)

Payload = dict[str, Any]

#: Seconds between heartbeats the CSMS asks for in BootNotification.
DEFAULT_HEARTBEAT_INTERVAL = 300
#: Ended transactions are kept this long (seconds) for inspection.
ENDED_TX_TTL = 30 * 86400

# Charger notifications whose response has no required field: the CSMS takes
# note (log) and confirms with an empty object. Per version, from the message
# lists of OCPP 1.6 §4 (plus the 1.6 security whitepaper) and OCPP 2.0.1 /
# 2.1 Part 2.
ACKNOWLEDGED: dict[str, frozenset[str]] = {
    "ocpp1.6": frozenset({
        "DiagnosticsStatusNotification", "FirmwareStatusNotification", "LogStatusNotification",
        "SecurityEventNotification", "SignedFirmwareStatusNotification",
    }),
    "ocpp2.0.1": frozenset({
        "ClearedChargingLimit", "FirmwareStatusNotification", "LogStatusNotification",
        "NotifyChargingLimit", "NotifyCustomerInformation", "NotifyDisplayMessages",
        "NotifyEvent", "NotifyMonitoringReport", "NotifyReport",
        "PublishFirmwareStatusNotification", "ReportChargingProfiles", "ReservationStatusUpdate",
        "SecurityEventNotification",
    }),
}
#: Versions whose payloads come in the OCPP 1.6 shapes: 1.6, and 1.5/1.2 SOAP
#: chargers converted by the router (docs/soap.md).
SHAPED_16 = frozenset({"ocpp1.6", "ocpp1.5", "ocpp1.2"})
ACKNOWLEDGED["ocpp2.1"] = ACKNOWLEDGED["ocpp2.0.1"] | frozenset({
    "BatterySwap", "ClosePeriodicEventStream", "NotifyDERAlarm", "NotifyDERStartStop",
    "NotifyPriorityCharging", "NotifySettlement", "ReportDERControl",
})


_now_ms = -1
_now_text = ""


def utc_now() -> str:
    """The current time as an RFC 3339 UTC date-time with milliseconds
    (formatted once per millisecond: many answers carry it)."""
    global _now_ms, _now_text
    ms = time.time_ns() // 1_000_000
    if ms != _now_ms:
        stamp = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        _now_text = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        _now_ms = ms
    return _now_text


Command = Sequence[bytes | str | int]


class StateStore:
    """The CSMS's Redis commands, auto-pipelined.

    Commands issued by any number of handlers during one event-loop iteration
    leave in one write on one connection (the router's compiled RESP encoder
    and reply reader); each caller gets its own replies. A group of commands
    (:meth:`run`) is written back to back, so ``MULTI … EXEC`` stays
    atomic on the shared connection. For clients the SDK cannot reach
    directly (TLS, Sentinel: ``direct_url`` is None) it uses redis-py.

    Args:
        redis: the Redis client.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._url = direct_url(redis)
        self._conn: RedisConnection | None = None
        self._opening: asyncio.Future[RedisConnection] | None = None
        self._buf = CommandBuffer()
        self._waiting: list[tuple[int, asyncio.Future[list[Any]]]] = []
        self._scheduled = False

    async def run(self, commands: Sequence[Command], *, transaction: bool = False) -> list[Any]:
        """Run ``commands``; return their replies (for a transaction, EXEC's).

        Raises:
            redis.exceptions.RedisError, router.streams.errors.StreamsError:
                Redis failed or answered an error.
        """
        if self._url is None:
            async with self.redis.pipeline(transaction=transaction) as pipe:
                for cmd in commands:
                    pipe.execute_command(*cmd)
                return await pipe.execute()
        conn = self._conn
        if conn is None or not conn.connected:
            conn = await self._connect()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        buf = self._buf
        if transaction:
            buf.append_command(b"MULTI")
        for cmd in commands:
            buf.append_command(*cmd)
        if transaction:
            buf.append_command(b"EXEC")
        self._waiting.append((len(commands) + 2 * transaction, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        replies = await fut
        if transaction:
            replies = [replies[-1]]
        for reply in replies:
            if isinstance(reply, RedisReplyError):
                raise reply
        return replies[0] if transaction else replies

    async def _connect(self) -> RedisConnection:
        if self._opening is None:
            assert self._url is not None
            self._opening = asyncio.ensure_future(open_connection(self._url, name="csms-state"))
        try:
            conn = self._conn = await asyncio.shield(self._opening)
        finally:
            self._opening = None
        return conn

    def _flush(self) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, []
        data = self._buf.take()
        if not waiting:
            return
        total = sum(n for n, _fut in waiting)

        def settle(replies: list[Any] | StreamsError) -> None:
            at = 0
            for n, fut in waiting:
                if fut.done():
                    pass
                elif isinstance(replies, StreamsError):
                    fut.set_exception(replies)
                else:
                    fut.set_result(replies[at:at + n])
                at += n

        conn = self._conn
        try:
            if conn is None:
                raise StreamsError("not connected to Redis")
            conn.send_raw(data, total, settle, 30.0)
        except StreamsError as exc:
            settle(exc)

    async def aclose(self) -> None:
        """Close the connection (a later command opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()


class ReferenceCSMS:
    """The reference CSMS: a :class:`BackendApp` with a handler per charger action.

    Args:
        redis: the Redis client (``decode_responses`` off).
        prefix: the key prefix (``--key-prefix``).
        shards: the number of inbound shards (``--shards``).
        group: the consumer group.
        heartbeat_interval: seconds, sent in BootNotification responses.
        allow: id tags / id tokens that are authorised; ``None`` accepts all.
        **app_options: passed to :class:`BackendApp` (``consumer``, ``claim_idle`` …).
    """

    def __init__(self, redis: aioredis.Redis, *, prefix: str = "ocpp", shards: int = 1,
                 group: str = "reference-csms",
                 heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL,
                 allow: Collection[str] | None = None, **app_options: Any) -> None:
        self.redis = redis
        self.prefix = prefix
        self.heartbeat_interval = heartbeat_interval
        self.allow = frozenset(allow) if allow is not None else None
        self.app = BackendApp(redis, group=group, prefix=prefix, shards=shards, **app_options)
        self.state = StateStore(redis)
        self._register()

    async def run(self) -> None:
        """Serve until :meth:`stop`."""
        try:
            await self.app.run()
        finally:
            await self.state.aclose()

    def stop(self) -> None:
        """Stop after the handlers in flight have answered."""
        self.app.stop()

    # ------------------------------------------------------------------ wiring

    def _register(self) -> None:
        on_call = self.app.on_call
        on_call("BootNotification")(self.boot_notification)
        on_call("Heartbeat")(self.heartbeat)
        on_call("Authorize")(self.authorize)
        on_call("StatusNotification")(self.status_notification)
        on_call("MeterValues")(self.meter_values)
        on_call("DataTransfer")(self.data_transfer)
        on_call("StartTransaction")(self.start_transaction)      # 1.6
        on_call("StopTransaction")(self.stop_transaction)        # 1.6
        on_call("TransactionEvent")(self.transaction_event)      # 2.0.1, 2.1
        on_call("SignCertificate")(self.sign_certificate)
        on_call("GetCertificateStatus")(self.get_certificate_status)
        on_call("Get15118EVCertificate")(self.get_15118_ev_certificate)
        on_call("NotifyEVChargingNeeds")(self.notify_ev_charging_needs)
        on_call("NotifyEVChargingSchedule")(self.accepted)
        on_call("OpenPeriodicEventStream")(self.accepted)        # 2.1
        on_call("PullDynamicScheduleUpdate")(self.rejected)      # 2.1
        on_call("GetCertificateChainStatus")(self.get_certificate_chain_status)  # 2.1
        on_call("VatNumberValidation")(self.vat_number_validation)               # 2.1
        for action in sorted(set().union(*ACKNOWLEDGED.values())):
            on_call(action)(self.acknowledge)
        self.app.on_connected()(self.connected)
        self.app.on_disconnected()(self.disconnected)
        self.app.on_send()(self.periodic_event)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, "csms", *parts))

    def is_allowed(self, token: str) -> bool:
        """Whether an id tag (1.6) or id token (2.x) is authorised."""
        return self.allow is None or token in self.allow

    def _id_token_info(self, id_token: dict[str, Any]) -> Payload:
        # OCPP 2.x: "NoAuthorization" tokens (free vend, C01) need no check.
        if id_token.get("type") == "NoAuthorization":
            return {"status": "Accepted"}
        return {"status": "Accepted" if self.is_allowed(id_token.get("idToken", "")) else "Invalid"}

    # ------------------------------------------------------------------ connections

    def connected(self, msg: Message) -> None:
        log.info("%s connected (%s, %s, node %s)", msg.cs, msg.proto, msg.addr, msg.node)

    def disconnected(self, msg: Message) -> None:
        log.info("%s disconnected (%s %s)", msg.cs, msg.code, msg.description)

    def periodic_event(self, msg: Message) -> None:
        """OCPP 2.1 SEND NotifyPeriodicEventStream: data only, nothing to answer."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s: %d bytes", msg.cs, msg.action, len(msg.payload))

    # ------------------------------------------------------------------ core messages

    async def boot_notification(self, msg: Message) -> Payload:
        """Accept every charger and remember what it says about itself."""
        req = msg.json
        info: dict[Any, Any]  # redis-py wants its own key union
        if msg.proto in SHAPED_16:
            info = {"vendor": req["chargePointVendor"], "model": req["chargePointModel"],
                    "firmware": req.get("firmwareVersion", "")}
        else:
            station = req["chargingStation"]
            info = {"vendor": station["vendorName"], "model": station["model"],
                    "firmware": station.get("firmwareVersion", ""), "reason": req["reason"]}
        info.update(proto=msg.proto, at=utc_now())
        await self.state.run([("HSET", self._key("boot", msg.cs),
                               *(x for kv in info.items() for x in kv))])
        return {"status": "Accepted", "currentTime": utc_now(),
                "interval": self.heartbeat_interval}

    def heartbeat(self, msg: Message) -> Payload:
        return {"currentTime": utc_now()}

    def authorize(self, msg: Message) -> Payload:
        req = msg.json
        if msg.proto in SHAPED_16:
            ok = self.is_allowed(req["idTag"])
            return {"idTagInfo": {"status": "Accepted" if ok else "Invalid"}}
        return {"idTokenInfo": self._id_token_info(req["idToken"])}

    async def status_notification(self, msg: Message) -> Payload:
        """Keep the last status of each connector (1.6: connectorId; 2.x: evse/connector)."""
        req = msg.json
        if msg.proto in SHAPED_16:
            connector = str(req["connectorId"])
            status = {"status": req["status"], "errorCode": req["errorCode"],
                      "timestamp": req.get("timestamp") or utc_now()}
        else:
            connector = f"{req['evseId']}/{req['connectorId']}"
            status = {"status": req["connectorStatus"], "timestamp": req["timestamp"]}
        await self.state.run([("HSET", self._key("status", msg.cs), connector,
                               orjson.dumps(status))])
        return {}

    def meter_values(self, msg: Message) -> Payload:
        # Nothing is stored; the payload is decoded only for a debug log.
        if log.isEnabledFor(logging.DEBUG):
            req = msg.json
            where = req.get("connectorId", req.get("evseId", 0))
            log.debug("%s meter values for %s: %d samples", msg.cs, where,
                      len(req.get("meterValue", ())))
        return {}

    def data_transfer(self, msg: Message) -> Payload:
        """No vendor extensions here (OCPP 1.6 §4.3, 2.0.1 P02)."""
        return {"status": "UnknownVendorId"}

    def acknowledge(self, msg: Message) -> Payload:
        """Notifications whose response carries nothing: note and confirm."""
        log.debug("%s %s", msg.cs, msg.action)
        return {}

    def accepted(self, msg: Message) -> Payload:
        return {"status": "Accepted"}

    def rejected(self, msg: Message) -> Payload:
        return {"status": "Rejected"}

    # ------------------------------------------------------------------ transactions, 1.6

    async def start_transaction(self, msg: Message) -> Payload:
        """Allocate a transaction id (OCPP 1.6 §4.8): even for a refused id tag,
        the charger needs an id to report the (stopped) transaction with."""
        req = msg.json
        ok = self.is_allowed(req["idTag"])
        tx_id = await self._transaction_id(msg)
        await self.state.run([("HSET", self._key("tx", msg.cs, str(tx_id)),
                               "connector", req["connectorId"], "idTag", req["idTag"],
                               "meterStart", req["meterStart"], "started", req["timestamp"],
                               "state", "active" if ok else "refused")])
        return {"idTagInfo": {"status": "Accepted" if ok else "Invalid"}, "transactionId": tx_id}

    async def _transaction_id(self, msg: Message) -> int:
        """The id for this StartTransaction, the same when it is delivered again.

        Delivery is at least once: had a CSMS died between allocating an id
        and answering, the redelivered message must not get a second id. The
        allocation is remembered per connection and message id (OCPP-J message
        ids are unique per sender and connection, OCPP-J 1.6 §4.1.3).
        """
        seen = self._key("txmsg", msg.cs, msg.conn, msg.id)
        [known] = await self.state.run([("GET", seen)])
        if known is not None:
            return int(known)
        [new_id] = await self.state.run([("INCR", self._key("txseq"))])
        [won] = await self.state.run([("SET", seen, new_id, "NX", "EX", 86400)])
        if won:
            return int(new_id)
        [known] = await self.state.run([("GET", seen)])
        return int(known or new_id)  # a concurrent delivery won

    async def stop_transaction(self, msg: Message) -> Payload:
        req = msg.json
        key = self._key("tx", msg.cs, str(req["transactionId"]))
        await self.state.run([
            ("HSET", key, "meterStop", req["meterStop"], "stopped", req["timestamp"],
             "reason", req.get("reason", "Local"), "state", "ended"),
            ("EXPIRE", key, ENDED_TX_TTL)], transaction=True)
        if "idTag" in req:
            ok = self.is_allowed(req["idTag"])
            return {"idTagInfo": {"status": "Accepted" if ok else "Invalid"}}
        return {}

    # ------------------------------------------------------------------ transactions, 2.x

    async def transaction_event(self, msg: Message) -> Payload:
        """Track a 2.x transaction (E01-E15); the charger allocates the id."""
        req = msg.json
        info = req["transactionInfo"]
        key = self._key("tx", msg.cs, info["transactionId"])
        fields: dict[Any, Any] = {"seqNo": req["seqNo"], "updated": req["timestamp"],
                                  "chargingState": info.get("chargingState", "")}
        if req["eventType"] == "Started":
            fields["started"] = req["timestamp"]
            fields["state"] = "active"
        elif req["eventType"] == "Ended":
            fields["stopped"] = req["timestamp"]
            fields["reason"] = info.get("stoppedReason", "Local")
            fields["state"] = "ended"
        if "evse" in req:
            fields["evse"] = f"{req['evse']['id']}/{req['evse'].get('connectorId', 0)}"
        answer: Payload = {}
        if "idToken" in req:
            fields["idToken"] = req["idToken"]["idToken"]
            # E01.FR.xx: the CSMS answers idTokenInfo when the request has an idToken.
            answer["idTokenInfo"] = self._id_token_info(req["idToken"])
        commands: list[Command] = [("HSET", key, *(x for kv in fields.items() for x in kv))]
        if req["eventType"] == "Ended":
            commands.append(("EXPIRE", key, ENDED_TX_TTL))
        await self.state.run(commands, transaction=True)
        return answer

    # ------------------------------------------------------------------ certificates, smart charging

    def sign_certificate(self, msg: Message) -> Payload:
        """No certificate authority behind the reference CSMS."""
        return {"status": "Rejected"}

    def get_certificate_status(self, msg: Message) -> Payload:
        """No OCSP responder reachable from here (2.0.1 M06)."""
        return {"status": "Failed"}

    def get_15118_ev_certificate(self, msg: Message) -> Payload:
        """No contract certificate pool (2.0.1 M01): fail with an empty EXI response."""
        return {"status": "Failed", "exiResponse": ""}

    def get_certificate_chain_status(self, msg: Message) -> Payload:
        """OCPP 2.1: one ``Failed`` status per requested certificate."""
        return {"certificateStatus": [
            {"certificateHashData": item["certificateHashData"], "source": item["source"],
             "status": "Failed", "nextUpdate": utc_now()}
            for item in msg.json["certificateStatusRequests"][:4]
        ]}

    def notify_ev_charging_needs(self, msg: Message) -> Payload:
        """No smart charging: 2.1 says so precisely, 2.0.1 can only reject."""
        return {"status": "NoChargingProfile" if msg.proto == "ocpp2.1" else "Rejected"}

    def vat_number_validation(self, msg: Message) -> Payload:
        """OCPP 2.1: no VAT validation service, so the number is not confirmed."""
        req = msg.json
        answer: Payload = {"vatNumber": req["vatNumber"], "status": "Rejected"}
        if "evseId" in req:
            answer["evseId"] = req["evseId"]
        return answer
