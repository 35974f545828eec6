"""The ``firmware-app`` command: run the phone, check its configuration, and talk to a running phone."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from firmware_app import __version__, control
from firmware_app import config as cfg
from firmware_app.errors import ConfigError, FirmwareAppError, NoAnswerError

EXIT_FAILED = 1  # the phone (or the command) said no, and why
EXIT_CONFIG = 2
EXIT_NO_ANSWER = 3  # no word from the phone: not running, gone or silent; a command sent may still happen


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"firmware-app: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except NoAnswerError as e:
        print(f"firmware-app: {e}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except FirmwareAppError as e:
        print(f"firmware-app: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="firmware-app", description="Headset softphone for Raspberry Pi devices.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "-c",
        "--config",
        default=os.environ.get("FIRMWARE_APP_CONFIG", str(cfg.DEFAULT_PATH)),
        help="configuration file (default: $FIRMWARE_APP_CONFIG or %(default)s)",
    )
    p.add_argument("--socket", help="control socket of a running phone (default: from the configuration)")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=control.TIMEOUT,
        metavar="SECONDS",
        help="give up after this long without a word from the phone (default: %(default)g); during a long "
        "operation, such as a transfer through a pool, the phone keeps saying it is at work",
    )
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    def cmd(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    cmd("run", _run, "run the phone (the service's main command)")
    sp = cmd("check-config", _check_config, "validate a configuration file without starting anything")
    sp.add_argument("path", nargs="?", help="file to check (default: --config)")
    cmd("status", _status, "show registration, phone state and calls")
    sp = cmd("answer", _simple("answer"), "answer the ringing call")
    sp.add_argument("--call", type=int)
    sp = cmd("reject", _simple("reject"), "reject the ringing call")
    sp.add_argument("--call", type=int)
    sp.add_argument("--code", type=int, help="SIP status to reject with (default: account.reject_code)")
    sp = cmd("hangup", _simple("hangup"), "hang up the current call")
    sp.add_argument("--call", type=int)
    sp = cmd("call", _call, "call a SIP URI or an extension")
    sp.add_argument("uri")
    sp = cmd("press", _press, "inject a button gesture through the same path as a physical button")
    sp.add_argument("button", help="the button's name in the configuration, e.g. main")
    sp.add_argument("gesture", help="single, double, long, down or up")
    sp.add_argument("--source", default="cli", help="input source to impersonate (default: cli)")
    sp = cmd("transfer", _transfer, "blind-transfer the current call to a configured target or pool")
    sp.add_argument("target")
    sp = cmd("action", _action, "run any action by name, e.g. hold or transfer:reception")
    sp.add_argument("name")
    sp = cmd("events", _events, "print the phone's events as JSON lines until it stops")
    sp = cmd("doctor", _doctor, "check sound devices, mixer, PJSUA2 build and registrar (the phone need not run)")
    sp.add_argument("--json", action="store_true", help="print the report as JSON, for fleet tools")
    sp = cmd("health", _health, "wait until the running phone works: engine up and the registrar answered "
             "(the A/B image marks a new slot good only then)")
    sp.add_argument("--wait", type=_seconds, default=0.001, metavar="SECONDS",
                    help="keep asking this long before saying no (default: ask once)")
    sp = cmd("update", _update, "install a signed software bundle into the other slot and restart into it, "
             "never during a call (A/B image)")
    sp.add_argument("source", nargs="?", help="a bundle file or an https:// URL")
    how = sp.add_mutually_exclusive_group()
    how.add_argument("--wanted", action="store_true", help="the version the provisioning server wants")
    how.add_argument("--usb", metavar="DEVICE", help="the newest *.raucb on the USB stick at DEVICE")
    how.add_argument("--status", action="store_true", help="show what the last update did")
    sp.add_argument("--ca-file", help="CA certificate(s) the URL's server is verified with (default: the system's)")
    sp.add_argument("--idle-deadline", type=_seconds, metavar="SECONDS",
                    help="give up, unchanged, when a call lasts longer than this (default: an hour)")
    sp.add_argument("--no-reboot", action="store_true", help="install, and let the next restart start it")
    sp.add_argument("--force", action="store_true", help="install even the version that runs now")
    from firmware_app import fleet  # fleet list|show|send; aiomqtt is imported only when one runs

    fleet.add_parser(sub)
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _socket(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    try:
        return cfg.load(args.config, secrets=False).control.socket
    except ConfigError:
        return cfg.Control().socket


def _run(args: argparse.Namespace) -> int:
    from firmware_app import app  # imports the engine (and PJSUA2) only for the command that needs it

    config, host = app.prepare(args.config)
    app.setup_logging(config.logging.level)
    return app.run(config, host)


def _check_config(args: argparse.Namespace) -> int:
    from firmware_app import app

    path = args.path or args.config
    config, host = app.prepare(path)
    print(f"{path}: OK (account {config.account.user}@{config.domain}, plugins: {', '.join(host.names()) or 'none'})")
    return 0


def _send(args: argparse.Namespace, message: dict[str, Any]) -> Any:
    reply = control.request(_socket(args), message, args.timeout)
    if not reply.get("ok"):
        raise FirmwareAppError(reply.get("error", "the phone refused"))
    return reply.get("result")


def _print(result: Any, done: str = "done") -> None:
    """The outcome on one line: the phone's result (JSON for a table), or ``done`` when it returned none."""
    if result is None:
        print(done)
    else:
        print(json.dumps(result) if isinstance(result, (dict, list)) else result)


def _simple(cmd: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        message: dict[str, Any] = {"cmd": cmd}
        if getattr(args, "call", None) is not None:
            message["call"] = args.call
        if getattr(args, "code", None) is not None:
            message["code"] = args.code
        _print(_send(args, message))
        return 0

    return run


def _status(args: argparse.Namespace) -> int:
    print(json.dumps(_send(args, {"cmd": "status"}), indent=2))  # a report for people, not an outcome
    return 0


def _call(args: argparse.Namespace) -> int:
    _print(_send(args, {"cmd": "call", "uri": args.uri}))
    return 0


def _press(args: argparse.Namespace) -> int:
    result = _send(args, {"cmd": "press", "button": args.button, "gesture": args.gesture, "source": args.source})
    print(result["action"] or "no action for this gesture now")
    return 0


def _transfer(args: argparse.Namespace) -> int:
    _print(_send(args, {"cmd": "transfer", "target": args.target}))
    return 0


def _action(args: argparse.Namespace) -> int:
    _print(_send(args, {"cmd": "action", "name": args.name}), f"{args.name}: done")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from firmware_app import doctor

    report = doctor.run(args.config)
    print(json.dumps(report, indent=2) if args.json else doctor.format_text(report))
    return 0 if report["ok"] else EXIT_FAILED


def _health(args: argparse.Namespace) -> int:
    from firmware_app import update

    ok, why = update.health(_socket(args), args.wait)
    print(why, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else EXIT_FAILED


def _update(args: argparse.Namespace) -> int:
    from firmware_app import update

    updater = update.Updater(
        update.Device(socket=_socket(args)),
        idle_deadline_s=args.idle_deadline or update.IDLE_DEADLINE_S,
        reboot=not args.no_reboot,
    )
    try:
        if args.status:
            print(json.dumps(updater.reconcile(), indent=2))
            return 0
        if args.wanted:
            updater.install_wanted()
        elif args.usb:
            updater.install_from_usb(args.usb)
        elif args.source:
            updater.install(args.source, ca_file=Path(args.ca_file) if args.ca_file else None, force=args.force)
        else:
            raise FirmwareAppError("update: give a bundle file or URL, --wanted, --usb DEVICE or --status")
    except update.UpdateDeferred as e:
        print(f"firmware-app: {e}", file=sys.stderr)
        return EXIT_NO_ANSWER
    return 0


def _events(args: argparse.Namespace) -> int:
    for event in control.stream_events(_socket(args), args.timeout):
        print(json.dumps(event), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
