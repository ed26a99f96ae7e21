"""A SOAP charge point for the tests: real HTTP both ways.

It POSTs OCPP-S requests to the router (aiohttp client) and runs its own SOAP
server (aiohttp web) for the central system's calls, whose address it gives in
WS-Addressing ``From``. XML is written by hand here and read with ElementTree
(trusted test input), independently of the router's codec.
"""

from __future__ import annotations

import asyncio
import gzip
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
DATES = {"1.6": "2015/10", "1.5": "2012/06", "1.2": "2010/08"}


def cs_ns(version: str) -> str:
    return f"urn://Ocpp/Cs/{DATES[version]}/"


def cp_ns(version: str) -> str:
    return f"urn://Ocpp/Cp/{DATES[version]}/"


def to_xml(name: str, value: Any) -> str:
    """Elements for a payload: dicts nest, lists repeat, ``{"_text": …, "_attrs":
    {…}}`` is text with attributes."""
    if isinstance(value, list):
        return "".join(to_xml(name, v) for v in value)
    if isinstance(value, dict):
        if "_text" in value:
            attrs = "".join(f' {k}="{v}"' for k, v in value.get("_attrs", {}).items())
            return f"<o:{name}{attrs}>{value['_text']}</o:{name}>"
        return f"<o:{name}>" + "".join(to_xml(k, v) for k, v in value.items()) + f"</o:{name}>"
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<o:{name}>{value}</o:{name}>"


def envelope(ns: str, headers: str, body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP}" '
            f'xmlns:a="{WSA}" xmlns:o="{ns}"><s:Header>{headers}</s:Header>'
            f"<s:Body>{body}</s:Body></s:Envelope>").encode()


def element_dict(el: ET.Element) -> Any:
    """ElementTree → plain values (strings; repeated children → lists)."""
    if len(el) == 0:
        return el.text or ""
    out: dict[str, Any] = {}
    for child in el:
        name = child.tag.rpartition("}")[2]
        value = element_dict(child)
        if name in out:
            if not isinstance(out[name], list):
                out[name] = [out[name]]
            out[name].append(value)
        else:
            out[name] = value
    return out


class Fault(Exception):
    def __init__(self, status: int, code: str, subcode: str, reason: str) -> None:
        super().__init__(f"{status} {code}/{subcode}: {reason}")
        self.status, self.code, self.subcode, self.reason = status, code, subcode, reason


def parse_fault(status: int, root: ET.Element) -> Fault | None:
    fault = root.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    if fault is None:
        return None
    code = fault.findtext(f"{{{SOAP}}}Code/{{{SOAP}}}Value", "").rpartition(":")[2]
    sub = fault.findtext(f"{{{SOAP}}}Code/{{{SOAP}}}Subcode/{{{SOAP}}}Value", "")
    reason = fault.findtext(f"{{{SOAP}}}Reason/{{{SOAP}}}Text", "")
    return Fault(status, code, sub.rpartition(":")[2], reason)


class SoapChargePoint:
    """One SOAP charger (its identity, version, and its own SOAP server)."""

    def __init__(self, router_port: int, identity: str, version: str = "1.6") -> None:
        self.url = f"http://127.0.0.1:{router_port}/ocpp/"
        self.identity = identity
        self.version = version
        self.port = 0               # its SOAP server's port, bound in __aenter__
        self.address = ""
        self.handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self.received: list[tuple[str, dict[str, str], Any]] = []
        self.delay = 0.0            # seconds each answer of its SOAP server takes
        self.active = 0             # calls being answered now …
        self.max_active = 0         # … and the most at once
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> SoapChargePoint:
        app = web.Application()
        app.router.add_post("/cp", self._serve)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        # Port 0: the kernel picks a free one at bind time (no race with the
        # other tests' processes picking ports).
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]
        self.address = f"http://127.0.0.1:{self.port}/cp"
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
        await self.stop_server()

    async def stop_server(self) -> None:
        """Take the charger's own SOAP server down (it becomes unreachable)."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # ------------------------------------------------------ charge point → router
    def request(self, action: str, payload: dict[str, Any], *, identity: str | None = None,
                ns: str | None = None, message_id: str | None = None) -> bytes:
        ident = self.identity if identity is None else identity
        headers = (f"<o:chargeBoxIdentity>{ident}</o:chargeBoxIdentity>" if ident else "")
        headers += (f"<a:Action>/{action}</a:Action>"
                    f"<a:MessageID>{message_id or 'urn:uuid:' + str(uuid.uuid4())}</a:MessageID>"
                    f"<a:From><a:Address>{self.address}</a:Address></a:From>"
                    f"<a:ReplyTo><a:Address>{WSA}/anonymous</a:Address></a:ReplyTo>"
                    f"<a:To>{self.url}</a:To>")
        name = action[0].lower() + action[1:] + "Request"
        return envelope(ns or cs_ns(self.version), headers, to_xml(name, payload))

    async def post(self, body: bytes, headers: dict[str, str] | None = None
                   ) -> tuple[int, bytes]:
        assert self.session is not None
        hdrs = {"Content-Type": "application/soap+xml; charset=utf-8"}
        hdrs.update(headers or {})
        async with self.session.post(self.url, data=body, headers=hdrs) as resp:
            return resp.status, await resp.read()

    async def call(self, action: str, payload: dict[str, Any], *, gzip_body: bool = False
                   ) -> Any:
        """Send a request; return the response element as plain values.

        Raises:
            Fault: the router answered with a SOAP fault.
        """
        body = self.request(action, payload)
        headers = {}
        if gzip_body:
            body, headers = gzip.compress(body), {"Content-Encoding": "gzip"}
        status, data = await self.post(body, headers)
        root = ET.fromstring(data)  # trusted: the router under test
        fault = parse_fault(status, root)
        if fault is not None:
            raise fault
        assert status == 200, (status, data)
        relates = root.findtext(f"{{{SOAP}}}Header/{{{WSA}}}RelatesTo")
        assert relates and relates.startswith("urn:uuid:")
        assert root.findtext(f"{{{SOAP}}}Header/{{{WSA}}}Action") == f"/{action}Response"
        el = root.find(f"{{{SOAP}}}Body")[0]  # type: ignore[index]
        assert el.tag == f"{{{cs_ns(self.version)}}}{action[0].lower() + action[1:]}Response"
        return element_dict(el) if len(el) else {}

    # ------------------------------------------------------ router → charge point
    async def _serve(self, request: web.Request) -> web.Response:
        data = await request.read()
        root = ET.fromstring(data)  # trusted: the router under test
        header = root.find(f"{{{SOAP}}}Header")
        assert header is not None
        hdrs = {child.tag.rpartition("}")[2]: (child.text or "").strip() or
                (child.findtext(f"{{{WSA}}}Address") or "") for child in header}
        el = root.find(f"{{{SOAP}}}Body")[0]  # type: ignore[index]
        ns, _, name = el.tag[1:].partition("}")
        assert ns == cp_ns(self.version), ns
        action = name[0].upper() + name[1:-len("Request")]
        payload = element_dict(el) if len(el) else {}
        self.received.append((action, hdrs, payload))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        handler = self.handlers.get(action)
        if handler is None:
            body = ('<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>'
                    'o:NotSupported</s:Value></s:Subcode></s:Code><s:Reason><s:Text '
                    'xml:lang="en">not supported here</s:Text></s:Reason></s:Fault>')
            return web.Response(status=400, body=envelope(cp_ns(self.version), "", body),
                                content_type="application/soap+xml")
        answer = handler(payload)
        rel = f"<a:RelatesTo>{hdrs.get('MessageID', '')}</a:RelatesTo>"
        resp = envelope(cp_ns(self.version), f"<a:Action>/{action}Response</a:Action>{rel}",
                        to_xml(name[:-len("Request")] + "Response", answer))
        # Compressed answers must be accepted too (OCPP-S §2).
        return web.Response(body=gzip.compress(resp), headers={
            "Content-Type": "application/soap+xml; charset=utf-8", "Content-Encoding": "gzip"})


async def wait_for(cond: Callable[[], bool], wait: float = 5.0) -> None:
    from tests.conftest import timeout
    deadline = asyncio.get_running_loop().time() + timeout(wait)
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)
