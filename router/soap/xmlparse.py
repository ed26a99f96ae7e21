"""The hardened XML parser of OCPP-S: bytes in, a small element tree out.

:func:`parse` is the single place an XML parser is constructed for data from
the network. It is expat (``xml.parsers.expat``, in the standard library) with
everything a SOAP message may not contain refused (SOAP 1.2 Part 1 §5: "The
XML infoset of a SOAP message MUST NOT contain a document type declaration
information item" nor processing instructions):

* a DOCTYPE (internal subset or not) is refused when it starts, so no entity
  can be declared — billion-laughs and external-entity documents fail before
  any expansion;
* entity and notation declarations, external entity references and parameter
  entities are refused by their handlers too (defence in depth), and an
  undefined entity reference is a well-formedness error;
* nothing is ever fetched (no handler resolves a URL);
* depth and element count are bounded; the caller bounds the byte size.

The tree is plain :class:`Element` objects with the namespace URI and the
local name split, attributes by local name, the text of each element (mixed
content is not part of any OCPP-S type).
"""

from __future__ import annotations

from xml.parsers import expat

from router.soap.errors import ForbiddenXML, MalformedXML, SoapError

#: Deepest element nesting accepted (an OCPP 1.6 SetChargingProfile in an
#: envelope is 8 levels deep).
MAX_DEPTH = 32
#: Most elements in one document.
MAX_ELEMENTS = 20_000


class Element:
    """One XML element: ``ns`` (URI, "" when none), ``name`` (local name),
    ``attrs`` (local name → value), ``children`` and ``text``."""

    __slots__ = ("attrs", "children", "name", "ns", "text")

    def __init__(self, ns: str, name: str, attrs: dict[str, str]) -> None:
        self.ns = ns
        self.name = name
        self.attrs = attrs
        self.children: list[Element] = []
        self.text = ""

    def __repr__(self) -> str:
        return f"<Element {{{self.ns}}}{self.name} children={len(self.children)}>"


def _split(qname: str) -> tuple[str, str]:
    ns, sep, local = qname.rpartition(" ")
    return (ns, local) if sep else ("", qname)


class _Builder:
    __slots__ = ("count", "root", "stack", "texts")

    def __init__(self) -> None:
        self.root: Element | None = None
        self.stack: list[Element] = []
        self.texts: list[list[str]] = []
        self.count = 0

    def start(self, qname: str, attrs: dict[str, str]) -> None:
        self.count += 1
        if self.count > MAX_ELEMENTS:
            raise MalformedXML(f"more than {MAX_ELEMENTS} elements")
        if len(self.stack) >= MAX_DEPTH:
            raise MalformedXML(f"elements nested deeper than {MAX_DEPTH}")
        ns, name = _split(qname)
        el = Element(ns, name, {_split(k)[1]: v for k, v in attrs.items()} if attrs else {})
        if self.stack:
            self.stack[-1].children.append(el)
        else:
            self.root = el
        self.stack.append(el)
        self.texts.append([])

    def end(self, qname: str) -> None:
        el = self.stack.pop()
        parts = self.texts.pop()
        if parts:
            el.text = "".join(parts)

    def data(self, text: str) -> None:
        if self.texts:
            self.texts[-1].append(text)


def _refuse_doctype(*args: object) -> None:
    raise ForbiddenXML("a document type declaration is not allowed in a SOAP message")


def _refuse_entity(*args: object) -> None:
    raise ForbiddenXML("entity declarations are not allowed in a SOAP message")


def _refuse_pi(*args: object) -> None:
    raise ForbiddenXML("processing instructions are not allowed in a SOAP message")


def _refuse_external(*args: object) -> int:
    raise ForbiddenXML("external entities are not allowed in a SOAP message")


def parse(data: bytes) -> Element:
    """Parse one XML document with every DTD feature refused.

    Args:
        data: the whole document (already size-checked and decompressed).

    Returns:
        The root element.

    Raises:
        ForbiddenXML: DOCTYPE, entity or notation declarations, external
            entities, processing instructions.
        MalformedXML: not well-formed, or over :data:`MAX_DEPTH` /
            :data:`MAX_ELEMENTS`.
    """
    builder = _Builder()
    # The single construction site (STYLE.md "Generated codecs"): namespace
    # processing on, "uri local" names.
    p = expat.ParserCreate(namespace_separator=" ")
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    p.StartDoctypeDeclHandler = _refuse_doctype
    p.EntityDeclHandler = _refuse_entity
    p.UnparsedEntityDeclHandler = _refuse_entity
    p.NotationDeclHandler = _refuse_entity
    p.ExternalEntityRefHandler = _refuse_external
    p.SkippedEntityHandler = _refuse_entity
    p.ProcessingInstructionHandler = _refuse_pi
    p.StartElementHandler = builder.start
    p.EndElementHandler = builder.end
    p.CharacterDataHandler = builder.data
    p.buffer_text = True
    try:
        p.Parse(data, True)
    except expat.ExpatError as exc:
        raise MalformedXML(f"not well-formed XML: {expat.errors.messages[exc.code]} "
                           f"at line {exc.lineno}") from None
    except SoapError:
        raise
    except (LookupError, ValueError):    # an unknown encoding= in the declaration …
        raise MalformedXML("unsupported XML encoding or data") from None
    except RecursionError:    # cannot happen below MAX_DEPTH; never leak it
        raise MalformedXML("document too deep") from None
    if builder.root is None:
        raise MalformedXML("empty document")
    return builder.root
