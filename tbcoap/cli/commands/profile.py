"""``tbcoap profile``: create and list device profiles, their provisioning settings and payload type.

A device's ``type`` names its profile. A profile that allows provisioning
(ALLOW_CREATE_NEW_DEVICES or CHECK_PRE_PROVISIONED_DEVICES) has a provision key and
secret, which a device sends to ``POST /api/v1/provision`` to get its access token.
A profile's devices speak JSON (and CBOR), or Protobuf with the profile's four proto3
schemas (``--payload protobuf --telemetry-schema FILE ..``; a schema not given is
ThingsBoard's default), sent in ThingsBoard's ``profileData.transportConfiguration``.
"""

from __future__ import annotations

import argparse

from tbcoap.cli.client import is_uuid, segment
from tbcoap.cli.commands import paging
from tbcoap.cli.errors import ApiError, UsageError
from tbcoap.cli.output import fields, iso, page_text

PROVISION_TYPES = ("DISABLED", "ALLOW_CREATE_NEW_DEVICES", "CHECK_PRE_PROVISIONED_DEVICES")
SCHEMA_OPTIONS = (  # option, its dest, the key in ThingsBoard's transportPayloadTypeConfiguration
    ("--telemetry-schema", "telemetry_schema", "deviceTelemetryProtoSchema"),
    ("--attributes-schema", "attributes_schema", "deviceAttributesProtoSchema"),
    ("--rpc-request-schema", "rpc_request_schema", "deviceRpcRequestProtoSchema"),
    ("--rpc-response-schema", "rpc_response_schema", "deviceRpcResponseProtoSchema"),
)


def register(commands):
    """Add ``tbcoap profile ...``."""
    group = commands.group("profile", "manage device profiles and their provisioning settings")
    p = group.command(
        "create", create, "create a device profile",
        description="Create a device profile. DISABLED (the default) refuses provisioning; "
                    "ALLOW_CREATE_NEW_DEVICES lets a device with the key and secret create itself; "
                    "CHECK_PRE_PROVISIONED_DEVICES gives the token of an existing device of this "
                    "profile, once. Both of those need --provision-key and --provision-secret "
                    "(provision keys are unique).")
    p.add_argument("name", metavar="NAME", help="the profile's name (what devices give as their type)")
    p.add_argument("--provision-type", type=provision_type, default="DISABLED", metavar="TYPE",
                   help=f"one of {', '.join(PROVISION_TYPES)} (any case; default DISABLED)")
    # not --key: that is the global option (the admin key)
    p.add_argument("--provision-key", metavar="KEY", help="the provision device key (unique among profiles)")
    p.add_argument("--provision-secret", "--secret", dest="provision_secret", metavar="SECRET",
                   help="the provision device secret")
    p.add_argument("--payload", type=payload_type, default="JSON", metavar="TYPE",
                   help="what its devices send: json (the default; CBOR too) or protobuf")
    for option, dest, key in SCHEMA_OPTIONS:
        p.add_argument(option, dest=dest, metavar="FILE",
                       help=f"with --payload protobuf: a proto3 file for {key} (default: ThingsBoard's)")
    p = group.command("list", list_profiles, "list device profiles, a page at a time")
    paging(p, "profiles")
    p = group.command("delete", delete, "delete a device profile (not the default, not one devices use)")
    p.add_argument("profile", metavar="NAME_OR_ID", help="the profile's name or id (uuid)")
    p = group.command("default", make_default, "make a profile the default (devices created without a type get it)")
    p.add_argument("profile", metavar="NAME_OR_ID", help="the profile's name or id (uuid)")


def provision_type(text) -> str:
    """An argparse type: a provision type, in any case, ``-`` for ``_``."""
    value = text.strip().upper().replace("-", "_")
    if value not in PROVISION_TYPES:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(PROVISION_TYPES)} (got {text!r})")
    return value


def payload_type(text) -> str:
    """An argparse type: json or protobuf, in any case."""
    value = text.strip().upper()
    if value not in ("JSON", "PROTOBUF"):
        raise argparse.ArgumentTypeError(f"must be json or protobuf (got {text!r})")
    return value


def request_body(args) -> dict:
    """The REST body of ``profile create``; UsageError when provisioning lacks a key or secret, a
    schema comes without --payload protobuf, or a schema file cannot be read."""
    if args.provision_type != "DISABLED" and not (args.provision_key and args.provision_secret):
        raise UsageError(f"--provision-type {args.provision_type} needs --provision-key and --provision-secret")
    body = {"name": args.name, "provisionType": args.provision_type}
    if args.provision_key is not None:
        body["provisionDeviceKey"] = args.provision_key
    if args.provision_secret is not None:
        body["provisionDeviceSecret"] = args.provision_secret
    schemas = {key: _schema_file(option, getattr(args, dest)) for option, dest, key in SCHEMA_OPTIONS
               if getattr(args, dest) is not None}
    if schemas and args.payload != "PROTOBUF":
        raise UsageError(f"{', '.join(o for o, d, _ in SCHEMA_OPTIONS if getattr(args, d))} needs --payload protobuf")
    if args.payload == "PROTOBUF":
        body["transportType"] = "COAP"
        body["profileData"] = {"transportConfiguration": {
            "type": "COAP", "coapDeviceTypeConfiguration": {
                "coapDeviceType": "DEFAULT",
                "transportPayloadTypeConfiguration": {"transportPayloadType": "PROTOBUF", **schemas}}}}
    return body


def _schema_file(option, path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{option} {path}: {getattr(e, 'strerror', None) or e}") from None


def payload_of(profile) -> str:
    """A profile's payload type as its JSON answers it: JSON or PROTOBUF."""
    transport = (profile.get("profileData") or {}).get("transportConfiguration") or {}
    payload = (transport.get("coapDeviceTypeConfiguration") or {}).get("transportPayloadTypeConfiguration") or {}
    return payload.get("transportPayloadType") or "JSON"


def describe(profile) -> str:
    """A profile as ``key: value`` lines."""
    return fields([
        ("name", profile.get("name")), ("id", (profile.get("id") or {}).get("id")),
        ("provision type", profile.get("provisionType")),
        ("provision key", profile.get("provisionDeviceKey")),
        ("provision secret", profile.get("provisionDeviceSecret")),
        ("payload", payload_of(profile)),
        ("default", "yes" if profile.get("default") else "no"),
        ("created", iso(profile.get("createdTime")))])


async def create(ctx, args):
    """POST /api/deviceProfile."""
    body = request_body(args)
    ctx.show(await ctx.client.call("POST", "/api/deviceProfile", body=body), describe)


async def list_profiles(ctx, args):
    """GET /api/deviceProfiles?pageSize=N&page=P (secrets only with --json)."""
    reply = await ctx.client.get("/api/deviceProfiles", {"pageSize": args.page_size, "page": args.page})

    def render(page):
        rows = [(p.get("name") + (" (default)" if p.get("default") else ""), p.get("provisionType"),
                 p.get("provisionDeviceKey"), payload_of(p), (p.get("id") or {}).get("id"), iso(p.get("createdTime")))
                for p in page.get("data", [])]
        return page_text(page, args.page, ("name", "provision type", "provision key", "payload", "id", "created"),
                         rows, "profile", "profiles")

    ctx.show(reply, render)


MAX_SEARCH_PAGES = 100  # pages of 1,000 profiles looked through for a name


async def profile_id(ctx, ref) -> str:
    """The id of the profile ``ref``: an id (uuid), else the profile of that name."""
    if is_uuid(ref):
        return ref
    for number in range(MAX_SEARCH_PAGES):
        page = (await ctx.client.get("/api/deviceProfiles", {"pageSize": 1000, "page": number})).data
        for profile in page["data"]:
            if profile["name"] == ref:
                return profile["id"]["id"]
        if not page["hasNext"]:
            break
    raise ApiError(404, f"no device profile named {ref!r}", None)


async def delete(ctx, args):
    """DELETE /api/deviceProfile/{profileId}."""
    found = await profile_id(ctx, args.profile)
    reply = await ctx.client.call("DELETE", f"/api/deviceProfile/{segment(found)}")
    ctx.show(reply, lambda _: f"deleted device profile {args.profile} ({found})")


async def make_default(ctx, args):
    """POST /api/deviceProfile/{profileId}/default."""
    found = await profile_id(ctx, args.profile)
    reply = await ctx.client.call("POST", f"/api/deviceProfile/{segment(found)}/default")
    ctx.show(reply, lambda p: f"device profile {p['name']} is the default now")
