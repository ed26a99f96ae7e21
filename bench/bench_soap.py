"""CPU per OCPP-S (SOAP) message next to the same message over OCPP-J.

    .venv/bin/python bench/bench_soap.py
    .venv/bin/python bench/bench_soap.py --number 5000 --rounds 5 --messages 20000 --json out.json

Two parts:

* **codec** (in this process): the router's own work per message, from the
  bytes a charger sends to the validated contract payload ("in"), and from a
  backend's payload to the bytes sent back ("out"). OCPP-J: ``Dialect.decode``
  of the frame / ``validate_response`` + ``encode_result``. OCPP-S:
  ``SoapCodec.decode_request`` of the envelope (hardened expat parse, table
  conversion, the 1.6 JSON schema check) / ``response_body`` +
  ``response_envelope``. Best round of ``--rounds``, ``time.process_time``.
* **router** (end to end, a real ``ocpp-router serve`` process and a real
  redis-server): ``--messages`` Heartbeats answered at the edge
  (``--heartbeat edge``, so no backend is involved) from ``--clients``
  chargers, once over WebSocket (OCPP-J 1.6) and once over SOAP 1.6 (HTTP
  keep-alive, one request at a time per charger). The figure is the router
  process's CPU (utime + stime from /proc) per message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.procstat import cpu_seconds  # noqa: E402
from bench.services import Service, python_module  # noqa: E402
from router.embedded_redis import RedisServer, free_port  # noqa: E402
from router.ocppj import dialect  # noqa: E402
from router.soap import SoapCodec, response_envelope  # noqa: E402

SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
NOW = "2026-12-04T10:00:00Z"

MESSAGES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "BootNotification 1.6": ("BootNotification", {
        "chargePointVendor": "ACME", "chargePointModel": "S1", "chargePointSerialNumber": "SN1",
        "firmwareVersion": "2.1.0", "meterType": "M1"},
        {"status": "Accepted", "currentTime": NOW, "interval": 300}),
    "StatusNotification 1.6": ("StatusNotification", {
        "connectorId": 1, "status": "Charging", "errorCode": "NoError", "timestamp": NOW}, {}),
    "MeterValues 1.6 (3 samples)": ("MeterValues", {
        "connectorId": 1, "transactionId": 42, "meterValue": [{"timestamp": NOW, "sampledValue": [
            {"value": "1200", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": "16.2", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
            {"value": "230.1", "measurand": "Voltage", "unit": "V", "phase": "L1"}]}]}, {}),
}


def _xml(name: str, value: Any) -> str:
    if isinstance(value, list):
        return "".join(_xml(name, v) for v in value)
    if isinstance(value, dict):
        return f"<o:{name}>" + "".join(_xml(k, v) for k, v in value.items()) + f"</o:{name}>"
    return f"<o:{name}>{value}</o:{name}>"


def soap_request(action: str, payload: dict[str, Any], identity: str = "B-1") -> bytes:
    name = action[0].lower() + action[1:] + "Request"
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP_ENV}" '
            f'xmlns:a="{WSA}" xmlns:o="urn://Ocpp/Cs/2015/10/"><s:Header>'
            f"<o:chargeBoxIdentity>{identity}</o:chargeBoxIdentity><a:Action>/{action}</a:Action>"
            "<a:MessageID>urn:uuid:6f2c0a3e-0000-4000-8000-000000000001</a:MessageID>"
            f"<a:From><a:Address>http://10.0.0.1:8080/cp</a:Address></a:From></s:Header>"
            f"<s:Body>{_xml(name, payload)}</s:Body></s:Envelope>").encode()


def best(fn: Callable[[], object], number: int, rounds: int) -> float:
    """CPU µs per call, best round."""
    out = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(number):
            fn()
        out.append((time.process_time() - t0) / number * 1e6)
    return min(out)


def codec_part(number: int, rounds: int) -> list[dict[str, Any]]:
    dia = dialect("ocpp1.6")
    codec = SoapCodec(dia)
    rows = []
    for label, (action, payload, answer) in MESSAGES.items():
        frame = json.dumps([2, "19223201", action, payload], separators=(",", ":")).encode()
        env = soap_request(action, payload)
        reply = json.dumps(answer, separators=(",", ":")).encode()
        assert codec.decode_request(env).payload == json.dumps(
            payload, separators=(",", ":")).encode(), label

        def json_out(action: str = action, reply: bytes = reply) -> bytes:
            dia.validate_response(action, reply)
            return dia.encode_result("19223201", reply)

        def soap_out(action: str = action, reply: bytes = reply) -> bytes:
            return response_envelope("1.6", action, codec.response_body("1.6", action, reply),
                                     "urn:uuid:6f2c0a3e-0000-4000-8000-000000000001")

        rows.append({
            "message": label, "json_bytes": len(frame), "soap_bytes": len(env),
            "json_in": best(lambda f=frame: dia.decode(f), number, rounds),
            "soap_in": best(lambda e=env: codec.decode_request(e), number, rounds),
            "json_out": best(json_out, number, rounds),
            "soap_out": best(soap_out, number, rounds),
        })
    return rows


async def _json_clients(port: int, clients: int, per_client: int) -> None:
    import websockets

    async def one(i: int) -> None:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ocpp/J-{i}",
                                      subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            for n in range(per_client):
                await ws.send(f'[2,"{n}","Heartbeat",{{}}]')
                await ws.recv()

    await asyncio.gather(*(one(i) for i in range(clients)))


async def _soap_clients(port: int, clients: int, per_client: int) -> None:
    import aiohttp

    async def one(i: int) -> None:
        body = soap_request("Heartbeat", {}, identity=f"S-{i}")
        conn = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=conn) as session:
            for _ in range(per_client):
                async with session.post(f"http://127.0.0.1:{port}/ocpp/", data=body, headers={
                        "Content-Type": "application/soap+xml; charset=utf-8"}) as resp:
                    assert resp.status == 200, resp.status
                    await resp.read()

    await asyncio.gather(*(one(i) for i in range(clients)))


def router_part(messages: int, clients: int) -> dict[str, float]:
    per_client = max(1, messages // clients)
    total = per_client * clients
    out: dict[str, float] = {}
    with RedisServer() as redis:
        port, admin = free_port(), free_port()
        argv = python_module("router.cli.main", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--admin-host", "127.0.0.1", "--admin-port", str(admin),
                             "--redis-url", redis.url, "--key-prefix", "bench-soap",
                             "--node-id", "bench-soap", "--heartbeat", "edge")
        with Service("router", argv, port) as svc:
            for name, run in (("json", _json_clients), ("soap", _soap_clients)):
                asyncio.run(run(port, clients, max(1, per_client // 10)))     # warm-up
                c0 = cpu_seconds(svc.pid)
                t0 = time.monotonic()
                asyncio.run(run(port, clients, per_client))
                elapsed = time.monotonic() - t0
                out[f"{name}_cpu_us"] = (cpu_seconds(svc.pid) - c0) / total * 1e6
                out[f"{name}_rate"] = total / elapsed
    out["messages"] = total
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--number", type=int, default=3000, help="calls per round (codec)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (codec); the best counts")
    ap.add_argument("--messages", type=int, default=10_000, help="Heartbeats per transport")
    ap.add_argument("--clients", type=int, default=8, help="concurrent chargers")
    ap.add_argument("--skip-router", action="store_true", help="codec part only")
    ap.add_argument("--json", help="write the raw figures to this file")
    args = ap.parse_args()
    rows = codec_part(args.number, args.rounds)
    print("| message | OCPP-J bytes | OCPP-S bytes | in: J µs | in: S µs | out: J µs | out: S µs |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['message']} | {r['json_bytes']} | {r['soap_bytes']} | {r['json_in']:.2f} | "
              f"{r['soap_in']:.2f} | {r['json_out']:.2f} | {r['soap_out']:.2f} |")
    result: dict[str, Any] = {"codec": rows, "machine": platform.platform(),
                              "cpus": os.cpu_count(), "args": vars(args)}
    if not args.skip_router:
        e2e = router_part(args.messages, args.clients)
        result["router"] = e2e
        print(f"\nrouter process, edge-answered Heartbeat, {e2e['messages']:.0f} messages, "
              f"{args.clients} chargers:")
        print(f"OCPP-J: {e2e['json_cpu_us']:.1f} µs CPU/message ({e2e['json_rate']:.0f}/s); "
              f"OCPP-S: {e2e['soap_cpu_us']:.1f} µs CPU/message ({e2e['soap_rate']:.0f}/s); "
              f"ratio {e2e['soap_cpu_us'] / e2e['json_cpu_us']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
