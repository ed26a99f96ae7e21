"""The fleet options (issue 13) reject values the router cannot use."""

from __future__ import annotations

import pytest

from router.config import ConfigError, load


@pytest.mark.parametrize(("name", "value"), [
    ("rebalance_close_code", "1000"),      # only 1001 and 1012 mean "come back"
    ("rebalance_tolerance", "0"),
    ("rebalance_rate", "0"),
    ("rebalance_interval", "-1"),
    ("max_handshake_rate", "-5"),
    ("message_rate", "nan"),
    ("message_burst", "0"),
    ("message_limit_action", "drop"),
    ("flap_window", "0"),
])
def test_bad_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError):
        load({name: value}, environ={})


def test_defaults_and_switches() -> None:
    c = load({}, environ={"OCPP_ROUTER_REBALANCE": "false", "OCPP_ROUTER_FLAP_LIMIT": "0"})
    assert (c.rebalance, c.flap_limit) == (False, 0)
    d = load({}, environ={})
    assert (d.rebalance, d.rebalance_close_code, d.message_rate, d.message_burst) == (
        True, 1012, 50.0, 500)
