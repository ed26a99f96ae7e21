"""OCPP 1.6 message types (msgspec Structs generated from the OCA schemas).

One class per message: ``<Action>Request`` (CALL / SEND payload) and
``<Action>Response`` (CALLRESULT payload), plus the nested types and enum
aliases the schemas define. ``REQUESTS`` / ``RESPONSES`` map action names to
the classes. Decode with ``router.ocppj.decode_payload`` (same verdict as the
router) or with ``msgspec.json.decode(data, type=...)``; encode with
``msgspec.json.encode`` (absent optional fields are omitted).
"""

from router.ocppj._generated.v16 import *  # noqa: F403
from router.ocppj._generated.v16 import REQUESTS as REQUESTS
from router.ocppj._generated.v16 import RESPONSES as RESPONSES
from router.ocppj._generated.v16 import __all__ as __all__
