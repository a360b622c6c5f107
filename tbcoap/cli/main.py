"""The ``tbcoap`` command: global options, command groups, key lookup, running on react.

Command groups live in ``tbcoap.cli.commands``: every module there with a
``register(commands)`` function is loaded (see that package's docstring).
"""

from __future__ import annotations

import argparse
import os
import pkgutil
import sys
import traceback
from importlib import import_module

from twisted.internet.task import react

import tbcoap
from tbcoap.cli import commands as commands_package
from tbcoap.cli.client import DEFAULT_TIMEOUT, Client
from tbcoap.cli.errors import ApiError, CliError, UsageError
from tbcoap.datadir import DEFAULT_DATA_DIR, key_file

DEFAULT_URL = "http://127.0.0.1:8080"
KEY_ENV = "TBCOAP_ADMIN_KEY"
DESCRIPTION = """Manage a tbcoap server over its REST API: devices, tokens, telemetry, attributes.
The admin key is --key, else $TBCOAP_ADMIN_KEY, else the file admin.key in --data-dir.
Global options may also follow the command. Exit codes: 0 done, 1 error (server answer
or unreachable server), 2 usage (bad arguments, no key)."""


def _global_options(defaults: bool, with_key: bool = True) -> argparse.ArgumentParser:
    """The global options; with ``defaults`` False they only override when given; without ``--key``
    for a command whose own ``--key`` means something else (the admin key then goes before it)."""
    def default(value):
        return value if defaults else argparse.SUPPRESS

    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("global options")
    group.add_argument("--url", default=default(DEFAULT_URL),
                       help=f"the server's REST API (default {DEFAULT_URL})")
    if with_key:
        group.add_argument("--key", default=default(None),
                           help=f"the admin key (default ${KEY_ENV}, else admin.key in --data-dir)")
    group.add_argument("--data-dir", default=default(DEFAULT_DATA_DIR), metavar="DIR",
                       help=f"the server's data directory, to read its admin.key (default {DEFAULT_DATA_DIR})")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print the server's JSON answers as they are, for scripts")
    group.add_argument("--timeout", type=float, default=default(DEFAULT_TIMEOUT), metavar="SECONDS",
                       help=f"give up on a call after this long (default {DEFAULT_TIMEOUT:g})")
    return parser


class Group:
    """One command group (``tbcoap device ...``); ``command`` adds a subcommand."""

    def __init__(self, subparsers, common):
        self._subparsers = subparsers
        self._common = common

    def command(self, name, func, help, needs_key=True, trailing=None, own_key=False, **kwargs):
        """Add ``name``, run as ``await func(ctx, args)``; returns its parser for arguments.

        ``trailing`` names a ``nargs="*"`` positional that also takes the words left after
        options (argparse alone would refuse ``DEVICE --scope S k=v``). ``own_key``: the command
        defines a ``--key`` of its own, so the global one may only come before it.
        """
        common = _global_options(False, with_key=False) if own_key else self._common
        parser = self._subparsers.add_parser(name, help=help, description=kwargs.pop("description", help),
                                             parents=[common], **kwargs)
        parser.set_defaults(func=func, needs_key=needs_key, trailing=trailing)
        return parser


class Commands:
    """What ``register(commands)`` of a command module receives."""

    def __init__(self, parser, common):
        self._subparsers = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
        self._common = common

    def command(self, name, func, help, **kwargs):
        """A command of its own at the top level (``tbcoap NAME ...``); returns its parser."""
        return Group(self._subparsers, self._common).command(name, func, help, **kwargs)

    def group(self, name, help, **kwargs) -> Group:
        """A new command group ``tbcoap NAME COMMAND ...``."""
        parser = self._subparsers.add_parser(name, help=help, description=kwargs.pop("description", help),
                                             parents=[self._common], **kwargs)
        subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
        return Group(subparsers, self._common)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, with every command module registered."""
    parser = argparse.ArgumentParser(prog="tbcoap", description=DESCRIPTION, parents=[_global_options(True)])
    parser.add_argument("--version", action="version", version=f"tbcoap {tbcoap.__version__}")
    commands = Commands(parser, _global_options(False))
    for info in sorted(pkgutil.iter_modules(commands_package.__path__), key=lambda m: m.name):
        module = import_module(f"{commands_package.__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(commands)
    return parser


def admin_key(args) -> tuple[str, str]:
    """``(key, where it came from)``: --key, $TBCOAP_ADMIN_KEY, else the data dir's key file;
    UsageError if none."""
    if args.key:
        return args.key, "--key"
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV], f"${KEY_ENV}"
    path = key_file(args.data_dir)
    try:
        with open(path, encoding="utf-8") as f:
            key = f.read().strip()
    except OSError as e:
        key = None
        reason = e.strerror or str(e)
    else:
        reason = "empty file"
    if key:
        return key, os.path.abspath(path)
    raise UsageError(f"no admin key: give --key KEY, set ${KEY_ENV}, or point --data-dir at the server's "
                     f"data directory (could not read {path}: {reason})")


class Context:
    """What a command sees: the client, the --json choice, and printing."""

    def __init__(self, client, args, stdout=None):
        self.client = client
        self.json = args.json
        self.stdout = stdout or sys.stdout

    def print(self, text=""):
        """Print one block of readable text."""
        print(text, file=self.stdout)

    def show(self, reply, render):
        """With --json the server's answer exactly (nothing when empty), else ``render(reply.data)``."""
        if self.json:
            if reply.text:
                self.print(reply.text)
        else:
            self.print(render(reply.data))


async def _run(reactor, args, key, key_source):
    try:
        client = Client(reactor, args.url, key, args.timeout)
        await args.func(Context(client, args), args)
    except ApiError as e:
        if e.status == 401 and key_source:
            _fail(f"{e} (the key from {key_source}; give the server's key with --key, ${KEY_ENV} "
                  f"or --data-dir)", e.code)
        _fail(e, e.code)
    except CliError as e:
        _fail(e, e.code)
    except Exception:
        traceback.print_exc()
        _fail("internal error (traceback above)", 1)


def _fail(message, code):
    print(f"tbcoap: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv=None):
    """Entry point of the ``tbcoap`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and (not getattr(args, "trailing", None) or any(word.startswith("-") for word in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        setattr(args, args.trailing, getattr(args, args.trailing) + extra)
    if not args.url.startswith(("http://", "https://")):
        parser.error(f"--url must start with http:// or https:// (got {args.url!r})")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    try:
        key, key_source = admin_key(args) if args.needs_key else (None, None)
    except UsageError as e:
        _fail(e, e.code)
    react(_run, (args, key, key_source))
