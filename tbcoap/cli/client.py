"""A small REST client on treq: one JSON call at a time, errors as CliError."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from urllib.parse import quote

import treq
from treq.client import HTTPClient
from twisted.internet import defer, error
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed

from tbcoap.cli.errors import ApiError, CliError, Unreachable

DEFAULT_TIMEOUT = 10.0  # seconds a call may take (the command line's --timeout)
MAX_SEARCH_PAGES = 100  # of 1,000 devices each, when a customer key looks a name up


@dataclass
class Reply:
    """A successful answer: its JSON value (None when empty) and its exact text."""

    data: object
    text: str


def segment(value) -> str:
    """``value`` quoted as one path segment."""
    return quote(str(value), safe="")


class Client:
    """Calls ``url`` + path with the admin key; ``timeout`` in seconds per call."""

    def __init__(self, reactor, url, key, timeout):
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self._reactor = reactor
        pool = HTTPConnectionPool(reactor, persistent=False)
        self._http = HTTPClient(Agent(reactor, pool=pool))

    async def call(self, method, path, params=None, body=None) -> Reply:
        """One REST call; raises ApiError on an error status, Unreachable on no answer in time."""
        answer = defer.ensureDeferred(self._exchange(method, path, params, body))
        answer.addTimeout(self.timeout, self._reactor)
        try:
            response, text = await answer
        except defer.TimeoutError:
            raise Unreachable(f"no answer from {self.url} within {self.timeout:g} s") from None
        data = _parse(text)
        if response.code >= 400:
            if isinstance(data, dict) and "message" in data:
                raise ApiError(data.get("status", response.code), data["message"], data)
            raise ApiError(response.code, response.phrase.decode("latin-1", "replace"), data)
        return Reply(data, text)

    async def _exchange(self, method, path, params, body):
        """Send one request; (response, body text)."""
        headers = {"Accept": ["application/json"]}
        if self.key is not None:
            headers["X-Authorization"] = [f"Bearer {self.key}"]
        kwargs = {"params": params, "headers": headers}
        if body is not None:
            kwargs["json"] = body
        try:
            response = await self._http.request(method, self.url + path, **kwargs)
            return response, (await treq.content(response)).decode("utf-8", "replace")
        except (error.ConnectError, error.DNSLookupError) as e:
            hint = "is the server running? Give its address with --url" \
                if isinstance(e, error.ConnectionRefusedError) else "check --url"
            raise Unreachable(f"cannot connect to {self.url} ({_describe(e)}); {hint}") from None
        except ResponseFailed as e:
            if any(f.check(defer.CancelledError) for f in e.reasons):
                raise defer.CancelledError() from None
            raise Unreachable(f"connection to {self.url} failed: {_describe(e)}") from None

    async def download(self, path, target) -> int:
        """GET ``path`` and stream its body into the new file ``target`` (0600); its size.  ApiError
        on an error status; the timeout is for the answer to begin, not for the whole body."""
        headers = {"X-Authorization": [f"Bearer {self.key}"]} if self.key is not None else {}
        answer = defer.ensureDeferred(self._request_only("GET", self.url + path, headers))
        answer.addTimeout(self.timeout, self._reactor)
        try:
            response = await answer
        except defer.TimeoutError:
            raise Unreachable(f"no answer from {self.url} within {self.timeout:g} s") from None
        if response.code >= 400:
            data = _parse((await treq.content(response)).decode("utf-8", "replace"))
            message = data.get("message") if isinstance(data, dict) else None
            raise ApiError(response.code, message or response.phrase.decode("latin-1", "replace"), data)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise CliError(f"cannot write {target}: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as out:
            await treq.collect(response, out.write)
            return out.tell()

    async def _request_only(self, method, url, headers):
        try:
            return await self._http.request(method, url, headers=headers)
        except (error.ConnectError, error.DNSLookupError) as e:
            raise Unreachable(f"cannot connect to {self.url} ({_describe(e)}); check --url") from None

    async def get(self, path, params=None) -> Reply:
        """GET ``path``."""
        return await self.call("GET", path, params)

    async def device(self, ref) -> dict:
        """The device named or identified by ``ref`` (see ``device_reply``)."""
        return (await self.device_reply(ref)).data

    async def device_reply(self, ref) -> Reply:
        """GET the device ``ref``: as an id when it is a uuid, else (or if no such id) as a name."""
        if not is_uuid(ref):
            return await self._device_by_name(ref)
        try:
            return await self.get(f"/api/device/{segment(ref)}")
        except ApiError as first:
            if first.status != 404:
                raise
            try:
                return await self._device_by_name(ref)
            except ApiError as second:
                raise (first if second.status == 404 else second) from None

    async def _device_by_name(self, name) -> Reply:
        """The admin's look-up by name; with a customer key, a search of the customer's own devices."""
        try:
            return await self.get("/api/tenant/devices", {"deviceName": name})
        except ApiError as refused:
            if refused.status != 403:
                raise
        me = (await self.get("/api/auth/user")).data
        path = f"/api/customer/{segment(me['customerId']['id'])}/devices"
        for page in range(MAX_SEARCH_PAGES):  # the search is "contains": keep the exact name
            found = (await self.get(path, {"textSearch": name, "pageSize": 1000, "page": page})).data
            for device in found["data"]:
                if device["name"] == name:
                    return Reply(device, json.dumps(device))
            if not found["hasNext"]:
                break
        raise ApiError(404, f"device named {name!r} not found", None)

    async def customer_id(self, ref) -> str:
        """The id of the customer ``ref``: an id (uuid) or a title; a customer key knows only itself."""
        if is_uuid(ref):
            return ref
        try:
            return (await self.get("/api/tenant/customers", {"customerTitle": ref})).data["id"]["id"]
        except ApiError as refused:
            if refused.status != 403:
                raise
        me = (await self.get("/api/auth/user")).data
        if me.get("name") != ref:
            raise ApiError(404, f"no customer titled {ref!r} that this key may see", None)
        return me["customerId"]["id"]


def _parse(text):
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return text


def is_uuid(text) -> bool:
    """True if ``text`` is a UUID (an id rather than a name)."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _describe(exc) -> str:
    if isinstance(exc, ResponseFailed):
        return "; ".join(f.getErrorMessage() for f in exc.reasons) or "connection lost"
    if isinstance(exc, error.ConnectionRefusedError):
        return "connection refused"
    return str(exc).strip().rstrip(".") or exc.__class__.__name__
