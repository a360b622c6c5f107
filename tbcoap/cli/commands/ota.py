"""``tbcoap ota``: firmware and software packages: upload, list, assign to a profile or a device,
see who downloads them, delete.

A package belongs to a device profile; assigned to the profile (or to one device of it, which wins
over its profile) it reaches the devices as ``fw_*`` / ``sw_*`` shared attributes, and they download
it from ``/fw/{token}`` or ``/sw/{token}`` over CoAP.  The upload is streamed from the file.
"""

from __future__ import annotations

import argparse
import json
import os

import treq
from twisted.internet import defer
from twisted.web.client import ResponseFailed

from tbcoap.cli.client import is_uuid, segment
from tbcoap.cli.commands import paging
from tbcoap.cli.commands.profile import profile_id
from tbcoap.cli.errors import ApiError, CliError, UsageError
from tbcoap.cli.output import fields, iso, page_text

TYPES = ("FIRMWARE", "SOFTWARE")
ALGORITHMS = ("MD5", "SHA256", "SHA384", "SHA512", "CRC32", "MURMUR3_32", "MURMUR3_128")
FIELD = {"FIRMWARE": "firmwareId", "SOFTWARE": "softwareId"}


def _choice(options):
    def parse(text):
        value = text.strip().upper()
        if value not in options:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(options)} (got {text!r})")
        return value
    return parse


def register(commands):
    """Add ``tbcoap ota ...``."""
    group = commands.group("ota", "firmware and software packages (OTA updates)")
    p = group.command("upload", upload, "upload a package for a device profile",
                      description="Create a package and upload FILE as its data (streamed); the server "
                                  "computes its checksum, or checks the one given.")
    p.add_argument("file", metavar="FILE", help="the package's data")
    p.add_argument("--title", required=True, help="the package's title (fw_title on the devices)")
    p.add_argument("--version", required=True, help="its version (fw_version)")
    p.add_argument("--type", type=_choice(TYPES), default="FIRMWARE", metavar="TYPE",
                   help="FIRMWARE (the default) or SOFTWARE")
    p.add_argument("--profile", required=True, metavar="NAME_OR_ID", help="the device profile it is for")
    p.add_argument("--tag", help="a tag (fw_tag; default: TITLE VERSION)")
    p.add_argument("--checksum-algorithm", type=_choice(ALGORITHMS), default="SHA256", metavar="ALG",
                   help=f"one of {', '.join(ALGORITHMS)} (default SHA256)")
    p.add_argument("--checksum", help="the checksum FILE must have (hex); default: computed by the server")
    p = group.command("list", list_packages, "list packages, a page at a time")
    paging(p, "packages")
    p = group.command("assign", assign, "assign a package to a device profile or to one device",
                      description="Assign PACKAGE (its id) to a profile's devices or to one device (a device's "
                                  "own package wins over its profile's); 'none' with --type removes it.")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--profile", metavar="NAME_OR_ID", help="the device profile")
    target.add_argument("--device", metavar="NAME_OR_ID", help="the device")
    p.add_argument("package", metavar="PACKAGE", help="the package's id, or none")
    p.add_argument("--type", type=_choice(TYPES), metavar="TYPE", help="with none: FIRMWARE or SOFTWARE")
    p = group.command("devices", devices, "the devices that get a package, with the state they reported")
    p.add_argument("package", metavar="PACKAGE", help="the package's id")
    paging(p, "devices")
    p = group.command("delete", delete, "delete a package (not while it is assigned)")
    p.add_argument("package", metavar="PACKAGE", help="the package's id")


def describe(package) -> str:
    return fields([
        ("title", package.get("title")), ("version", package.get("version")), ("type", package.get("type")),
        ("id", (package.get("id") or {}).get("id")), ("tag", package.get("tag")),
        ("file", package.get("fileName")), ("size", package.get("dataSize")),
        ("checksum", f"{package.get('checksumAlgorithm')} {package.get('checksum')}" if package.get("hasData")
         else None),
        ("created", iso(package.get("createdTime")))])


async def upload(ctx, args):
    """POST /api/otaPackage, then POST /api/otaPackage/{id} with the file (multipart, streamed)."""
    try:
        handle = open(args.file, "rb")
    except OSError as exc:
        raise UsageError(f"{args.file}: {exc.strerror}") from None
    with handle:
        profile = await profile_id(ctx, args.profile)
        body = {"title": args.title, "version": args.version, "type": args.type,
                "deviceProfileId": {"entityType": "DEVICE_PROFILE", "id": profile}}
        if args.tag:
            body["tag"] = args.tag
        info = (await ctx.client.call("POST", "/api/otaPackage", body=body)).data
        package_id = info["id"]["id"]
        params = {"checksumAlgorithm": args.checksum_algorithm}
        if args.checksum:
            params["checksum"] = args.checksum
        try:
            reply = await _send_file(ctx.client, f"/api/otaPackage/{segment(package_id)}", params, handle,
                                     os.path.basename(args.file))
        except BaseException:
            try:  # the package without data goes, so the same title and version can be uploaded again
                await ctx.client.call("DELETE", f"/api/otaPackage/{segment(package_id)}")
            except (ApiError, CliError):
                pass
            raise
    ctx.show(reply, describe)


class _Reply:
    def __init__(self, data, text):
        self.data, self.text = data, text


async def _send_file(client, path, params, handle, name):
    """A multipart POST of ``handle`` as the part ``file`` (treq reads it as it sends)."""
    headers = {"Accept": ["application/json"]}
    if client.key is not None:
        headers["X-Authorization"] = [f"Bearer {client.key}"]
    try:
        response = await treq.post(client.url + path, params=params, headers=headers,
                                   files={"file": (name, "application/octet-stream", handle)})
        text = (await treq.content(response)).decode("utf-8", "replace")
    except ResponseFailed as exc:
        raise CliError(f"the upload to {client.url} failed: {exc.reasons[0].getErrorMessage()}") from None
    except (OSError, defer.CancelledError) as exc:
        raise CliError(f"the upload to {client.url} failed: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = text
    if response.code >= 400:
        message = data.get("message") if isinstance(data, dict) else None
        raise ApiError(response.code, message or response.phrase.decode("latin-1", "replace"), data)
    return _Reply(data, text)


async def list_packages(ctx, args):
    """GET /api/otaPackages?pageSize=N&page=P."""
    reply = await ctx.client.get("/api/otaPackages", {"pageSize": args.page_size, "page": args.page})

    def render(page):
        rows = [(p.get("title"), p.get("version"), p.get("type"), p.get("dataSize") if p.get("hasData") else "-",
                 (p.get("id") or {}).get("id"), iso(p.get("createdTime"))) for p in page.get("data", [])]
        return page_text(page, args.page, ("title", "version", "type", "size", "id", "created"), rows,
                         "package", "packages")

    ctx.show(reply, render)


async def assign(ctx, args):
    """Save the profile or device with its firmwareId / softwareId (ThingsBoard's way)."""
    if args.package.lower() == "none":
        if args.type is None:
            raise UsageError("assigning none needs --type FIRMWARE or SOFTWARE")
        ota_type, ref = args.type, None
    else:
        if not is_uuid(args.package):
            raise UsageError(f"PACKAGE is a package id (see tbcoap ota list), not {args.package!r}")
        package = (await ctx.client.get(f"/api/otaPackage/info/{segment(args.package)}")).data
        ota_type, ref = package["type"], {"entityType": "OTA_PACKAGE", "id": package["id"]["id"]}
        if args.type is not None and args.type != ota_type:
            raise UsageError(f"package {args.package} is {ota_type}, not {args.type}")
    if args.profile is not None:
        found = await profile_id(ctx, args.profile)
        entity = (await ctx.client.get(f"/api/deviceProfile/{segment(found)}")).data
        path, what = "/api/deviceProfile", f"device profile {entity['name']}"
    else:
        entity = await ctx.client.device(args.device)
        path, what = "/api/device", f"device {entity['name']}"
    entity[FIELD[ota_type]] = ref
    reply = await ctx.client.call("POST", path, body=entity)
    ctx.show(reply, lambda _: f"{what}: {ota_type.lower()} {ref['id'] if ref else 'none'}")


async def devices(ctx, args):
    """GET /api/otaPackage/{id}/devices?pageSize=N&page=P."""
    reply = await ctx.client.get(f"/api/otaPackage/{segment(args.package)}/devices",
                                 {"pageSize": args.page_size, "page": args.page})

    def render(page):
        rows = [(d.get("name"), d.get("otaState") or "-", d.get("otaError") or "", (d.get("id") or {}).get("id"))
                for d in page.get("data", [])]
        return page_text(page, args.page, ("device", "state", "error", "id"), rows, "device", "devices")

    ctx.show(reply, render)


async def delete(ctx, args):
    """DELETE /api/otaPackage/{id}."""
    reply = await ctx.client.call("DELETE", f"/api/otaPackage/{segment(args.package)}")
    ctx.show(reply, lambda _: f"deleted package {args.package}")
