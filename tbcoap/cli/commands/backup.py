"""``tbcoap backup FILE``: a consistent snapshot of a running node's store, written to FILE."""

from __future__ import annotations

import os

from tbcoap.cli.errors import CliError

DESCRIPTION = """Write a consistent snapshot of the store of the node at --url to FILE (GET /api/admin/backup,
admin key), while the node keeps serving: every point the node acknowledged before the snapshot
began is in it. The file is written under FILE.part and renamed when complete. To restore a SQLite
node: stop it, put the file in place of <data-dir>/tbcoap.sqlite3 (removing tbcoap.sqlite3-wal and
tbcoap.sqlite3-shm beside it), start it. A Redis node answers that Redis keeps its own backups
(BGSAVE, AOF): then the command says so and exits 1."""


def register(commands):
    """Add ``tbcoap backup FILE [--force]``."""
    p = commands.command("backup", backup, "write a snapshot of the node's store to FILE", description=DESCRIPTION)
    p.add_argument("file", metavar="FILE", help="where to write the snapshot")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")


async def backup(ctx, args):
    """GET /api/admin/backup, streamed to FILE.part, then renamed to FILE."""
    if os.path.exists(args.file) and not args.force:
        raise CliError(f"{args.file} exists; give --force to replace it")
    partial = args.file + ".part"
    try:
        size = await ctx.client.download("/api/admin/backup", partial)
    except BaseException:
        _remove(partial)
        raise
    os.replace(partial, args.file)
    ctx.print(f"backup of {size:,} bytes written to {args.file}")


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
