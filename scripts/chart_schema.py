"""Generate the ``config`` section of helm/ocpp-router/values.schema.json from
the router's option table (router/config.py), so the chart knows every option.

    python -m scripts.chart_schema          # rewrite the section
    python -m scripts.chart_schema --check  # exit 1 when it is out of date (the tests do this)

Each option becomes a property named as in the TOML file, typed by its parser;
an option whose parser this script does not know is accepted untyped (the
router checks it at start). The options the chart sets from other values are
left out (:data:`NOT_IN_CONFIG`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from router.config import KNOWN_SUBPROTOCOLS, OPTIONS, Option

SCHEMA = Path(__file__).resolve().parents[1] / "helm" / "ocpp-router" / "values.schema.json"

# Set by the chart from Secrets, the trustedProxy values and the pod name.
NOT_IN_CONFIG = frozenset({"redis_url", "tls_cert", "tls_key", "tls_client_ca", "node_id",
                           "trusted_proxy_header", "trusted_proxy_networks"})
# The options the chart's templates read: always present in values.yaml.
REQUIRED = ["port", "admin_port", "path_prefix", "workers", "key_prefix", "shards",
            "max_connections", "drain_seconds", "close_timeout", "publish_timeout",
            "reply_timeout", "ping_interval", "ping_timeout"]

_BY_PARSER: dict[str, dict[str, Any]] = {
    "_port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "_positive_int": {"type": "integer", "minimum": 1},
    "_non_negative_int": {"type": "integer", "minimum": 0},
    "_window_bits": {"type": "integer", "minimum": 9, "maximum": 15},
    "_seconds": {"type": "number", "minimum": 0},
    "_positive_seconds": {"type": "number", "exclusiveMinimum": 0},
    "_bool": {"type": "boolean"},
    "_path_prefix": {"type": "string", "pattern": "^/"},
    "_key_prefix": {"type": "string", "pattern": "^[^\\s{}]+$"},
    "_str": {"type": "string"},
    "_subprotocols": {"type": "array", "minItems": 1, "uniqueItems": True,
                      "items": {"enum": list(KNOWN_SUBPROTOCOLS)}},
}


def _choices(option: Option) -> list[str] | None:
    """The choices of a ``_choice(...)`` parser, read from its closure."""
    for cell in getattr(option.parse, "__closure__", None) or ():
        value = cell.cell_contents
        if isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            return list(value)
    return None


def option_schema(option: Option) -> dict[str, Any]:
    prop: dict[str, Any] = {"description": option.help}
    choices = _choices(option)
    if choices is not None:
        prop["enum"] = choices
    else:
        prop.update(_BY_PARSER.get(getattr(option.parse, "__name__", ""), {}))
    return prop


def config_section() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "description": "ocpp-router options by their TOML names (docs/configuration.md); "
                       "redis_url, tls_*, trusted_proxy_* and node_id come from other values",
        "properties": {o.name: option_schema(o) for o in OPTIONS if o.name not in NOT_IN_CONFIG},
        "required": REQUIRED,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args()
    schema = json.loads(SCHEMA.read_text())
    section = config_section()
    if args.check:
        if schema["properties"]["config"] != section:
            print(f"{SCHEMA} is out of date: run python -m scripts.chart_schema",
                  file=sys.stderr)
            return 1
        return 0
    schema["properties"]["config"] = section
    SCHEMA.write_text(json.dumps(schema, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
