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

Each handler is a plain coroutine taking a :class:`~router.backend.Message`
and returning the response payload as a dict: the SDK writes it to the right
node's out stream and acknowledges the entry afterwards.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection
from typing import Any

import orjson
import redis.asyncio as aioredis

from router.backend.app import BackendApp
from router.backend.message import Message

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


def utc_now() -> str:
    """The current time as an RFC 3339 UTC date-time with milliseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        self._register()

    async def run(self) -> None:
        """Serve until :meth:`stop`."""
        await self.app.run()

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

    async def connected(self, msg: Message) -> None:
        log.info("%s connected (%s, %s, node %s)", msg.cs, msg.proto, msg.addr, msg.node)

    async def disconnected(self, msg: Message) -> None:
        log.info("%s disconnected (%s %s)", msg.cs, msg.code, msg.description)

    async def periodic_event(self, msg: Message) -> None:
        """OCPP 2.1 SEND NotifyPeriodicEventStream: data only, nothing to answer."""
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
        await self.redis.hset(self._key("boot", msg.cs),
                              mapping={**info, "proto": msg.proto, "at": utc_now()})
        return {"status": "Accepted", "currentTime": utc_now(),
                "interval": self.heartbeat_interval}

    async def heartbeat(self, msg: Message) -> Payload:
        return {"currentTime": utc_now()}

    async def authorize(self, msg: Message) -> Payload:
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
        await self.redis.hset(self._key("status", msg.cs), connector, orjson.dumps(status))
        return {}

    async def meter_values(self, msg: Message) -> Payload:
        req = msg.json
        where = req.get("connectorId", req.get("evseId", 0))
        log.debug("%s meter values for %s: %d samples", msg.cs, where, len(req.get("meterValue", ())))
        return {}

    async def data_transfer(self, msg: Message) -> Payload:
        """No vendor extensions here (OCPP 1.6 §4.3, 2.0.1 P02)."""
        return {"status": "UnknownVendorId"}

    async def acknowledge(self, msg: Message) -> Payload:
        """Notifications whose response carries nothing: note and confirm."""
        log.debug("%s %s", msg.cs, msg.action)
        return {}

    async def accepted(self, msg: Message) -> Payload:
        return {"status": "Accepted"}

    async def rejected(self, msg: Message) -> Payload:
        return {"status": "Rejected"}

    # ------------------------------------------------------------------ transactions, 1.6

    async def start_transaction(self, msg: Message) -> Payload:
        """Allocate a transaction id (OCPP 1.6 §4.8): even for a refused id tag,
        the charger needs an id to report the (stopped) transaction with."""
        req = msg.json
        ok = self.is_allowed(req["idTag"])
        tx_id = await self._transaction_id(msg)
        await self.redis.hset(self._key("tx", msg.cs, str(tx_id)), mapping={
            "connector": req["connectorId"], "idTag": req["idTag"],
            "meterStart": req["meterStart"], "started": req["timestamp"],
            "state": "active" if ok else "refused"})
        return {"idTagInfo": {"status": "Accepted" if ok else "Invalid"}, "transactionId": tx_id}

    async def _transaction_id(self, msg: Message) -> int:
        """The id for this StartTransaction, the same when it is delivered again.

        Delivery is at least once: had a CSMS died between allocating an id
        and answering, the redelivered message must not get a second id. The
        allocation is remembered per connection and message id (OCPP-J message
        ids are unique per sender and connection, OCPP-J 1.6 §4.1.3).
        """
        seen = self._key("txmsg", msg.cs, msg.conn, msg.id)
        known = await self.redis.get(seen)
        if known is not None:
            return int(known)
        new_id = int(await self.redis.incr(self._key("txseq")))
        if await self.redis.set(seen, new_id, nx=True, ex=86400):
            return new_id
        return int(await self.redis.get(seen) or new_id)  # a concurrent delivery won

    async def stop_transaction(self, msg: Message) -> Payload:
        req = msg.json
        key = self._key("tx", msg.cs, str(req["transactionId"]))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"meterStop": req["meterStop"], "stopped": req["timestamp"],
                                    "reason": req.get("reason", "Local"), "state": "ended"})
            pipe.expire(key, ENDED_TX_TTL)
            await pipe.execute()
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
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            if req["eventType"] == "Ended":
                pipe.expire(key, ENDED_TX_TTL)
            await pipe.execute()
        return answer

    # ------------------------------------------------------------------ certificates, smart charging

    async def sign_certificate(self, msg: Message) -> Payload:
        """No certificate authority behind the reference CSMS."""
        return {"status": "Rejected"}

    async def get_certificate_status(self, msg: Message) -> Payload:
        """No OCSP responder reachable from here (2.0.1 M06)."""
        return {"status": "Failed"}

    async def get_15118_ev_certificate(self, msg: Message) -> Payload:
        """No contract certificate pool (2.0.1 M01): fail with an empty EXI response."""
        return {"status": "Failed", "exiResponse": ""}

    async def get_certificate_chain_status(self, msg: Message) -> Payload:
        """OCPP 2.1: one ``Failed`` status per requested certificate."""
        return {"certificateStatus": [
            {"certificateHashData": item["certificateHashData"], "source": item["source"],
             "status": "Failed", "nextUpdate": utc_now()}
            for item in msg.json["certificateStatusRequests"][:4]
        ]}

    async def notify_ev_charging_needs(self, msg: Message) -> Payload:
        """No smart charging: 2.1 says so precisely, 2.0.1 can only reject."""
        return {"status": "NoChargingProfile" if msg.proto == "ocpp2.1" else "Rejected"}

    async def vat_number_validation(self, msg: Message) -> Payload:
        """OCPP 2.1: no VAT validation service, so the number is not confirmed."""
        req = msg.json
        answer: Payload = {"vatNumber": req["vatNumber"], "status": "Rejected"}
        if "evseId" in req:
            answer["evseId"] = req["evseId"]
        return answer
