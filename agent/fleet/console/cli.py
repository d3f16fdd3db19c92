"""``edge-fleet console``: run the web console (needs the ``console`` extra).

Binds 127.0.0.1 by default. ``--listen HOST:PORT`` on anything but loopback requires
``--login-password file:PATH``; docs/console.md explains how to put it behind a TLS proxy.
The web stack is imported only when the command runs: ``edge-fleet`` without the extra
still works, and says what to install when ``console`` is asked for.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import SecretStr

from agent.config.base import SECRET_PREFIX, resolve_secret
from agent.errors import AgentError, CommandError, Reason
from agent.fleet.deliver import add_broker_args, connect
from agent.log import get_logger
from agent.update.transfer.wire import Topics

log = get_logger(__name__)
DEFAULT_PORT = 8780


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(DEFAULT_PORT)
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(Reason.MALFORMED, f"--listen wants HOST:PORT, got {text!r}")
    return host, int(port)


def login_password(value: str) -> str:
    if not value:
        return ""
    if not value.startswith(SECRET_PREFIX):
        # A password on the command line would show in `ps` to every user of the machine.
        raise CommandError(Reason.MALFORMED, "--login-password takes file:PATH only")
    password = resolve_secret(SecretStr(value), "--login-password")
    if len(password) < 8:
        raise CommandError(Reason.MALFORMED, "the console password must have 8 characters or more")
    return password


def run_console(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: PLC0415 - optional extra, imported when the command runs

        from agent.fleet.console.actions import Actions  # noqa: PLC0415
        from agent.fleet.console.app import LOOPBACK_HOSTS, Console, build_app  # noqa: PLC0415
    except ImportError as exc:
        raise AgentError(
            f"edge-fleet console needs the console extra: pip install 'edge-agent[console]' "
            f"({exc.name} is missing)"
        ) from exc
    from agent.fleet.console.auth import PasswordCheck, Sessions, is_loopback  # noqa: PLC0415
    from agent.fleet.console.rollouts import Deployments  # noqa: PLC0415
    from agent.fleet.console.snapshots import LatestImages  # noqa: PLC0415
    from agent.fleet.console.state import FleetState  # noqa: PLC0415

    host, port = parse_listen(args.listen)
    password = login_password(args.login_password)
    loopback = is_loopback(host)
    if not loopback and not password:
        raise CommandError(
            Reason.NOT_ALLOWED,
            f"--listen {host} is reachable from other machines: give --login-password "
            "file:PATH (and put a TLS reverse proxy in front, see docs/console.md)",
        )
    topics = Topics(args.topic_root)
    client = connect(args)
    state = FleetState(args.topic_root, window_s=args.history)
    for topic_filter in state.filters():
        client.subscribe(topic_filter, state.on_message)
    images = LatestImages(args.topic_root)
    client.subscribe(images.filter(), images.on_message)
    deployments = Deployments(client, topics, answer_s=args.answer_timeout)
    console = Console(
        state=state,
        actions=Actions(client, topics, deployments, args.bundles),
        sessions=Sessions(PasswordCheck.of(password) if password else None),
        broker=client.url,
        allowed_hosts=LOOPBACK_HOSTS if loopback else (args.allowed_host or ["*"]),
        images=images,
    )
    config = uvicorn.Config(
        build_app(console),
        host=host,
        port=port,
        log_level="warning",
        proxy_headers=True,  # X-Forwarded-Proto from a TLS proxy on this machine
        forwarded_allow_ips="127.0.0.1",
        access_log=False,
    )
    print(f"console on http://{host}:{port}/ (broker {client.url})", flush=True)
    log.info("console_started", host=host, port=port, login=bool(password))
    try:
        uvicorn.Server(config).run()
    finally:
        deployments.close()
        client.close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    console = sub.add_parser("console", help="local web console: fleet, charts, deployments")
    console.add_argument(
        "--listen", default=f"127.0.0.1:{DEFAULT_PORT}", metavar="HOST:PORT", help="where to bind"
    )
    console.add_argument(
        "--login-password",
        default="",
        metavar="file:PATH",
        help="require this password (read from PATH); needed when --listen is not loopback",
    )
    console.add_argument(
        "--bundles", type=Path, default=None, metavar="DIR", help="bundles to publish"
    )
    console.add_argument("--history", type=float, default=3600.0, metavar="S", help="chart window")
    console.add_argument("--answer-timeout", type=float, default=30.0, metavar="S")
    console.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="Host header names accepted when exposed (default: any)",
    )
    add_broker_args(console)
    console.set_defaults(func=run_console)
