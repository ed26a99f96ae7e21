"""``ocpp-router serve``: run the router service."""

from __future__ import annotations

import argparse

from router.cli.main import CLIError
from router.config import ConfigError, load
from router.config import add_arguments as add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Every option can also be set as an environment variable "
                     "(OCPP_ROUTER_<OPTION>) or in the TOML file given by --config. "
                     "See docs/configuration.md.")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        config = load(args)
    except ConfigError as exc:
        raise CLIError(str(exc), 2) from exc
    from router.server.admin import ListenError
    from router.server.supervisor import serve

    try:
        return serve(config)
    except ListenError as exc:
        raise CLIError(str(exc)) from exc
    except OSError as exc:
        raise CLIError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from exc
