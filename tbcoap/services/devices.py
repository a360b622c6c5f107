"""Devices and their credentials (access tokens, X.509 certificates, DTLS pre-shared keys):
creation, lookup, rotation, deletion.

Lookups are answered from memory when the token, certificate or PSK identity was seen before;
the cache is invalidated whenever a credential changes or a device goes.  Which device a token
belongs to is decided by the ``tbcoap_authenticate`` plugins; certificates and pre-shared keys are
looked up in the store.
"""

from __future__ import annotations

import secrets
from typing import NamedTuple

from twisted.internet import defer

from tbcoap.errors import BadRequest, NotFound
from tbcoap.models import (ACCESS_TOKEN, DEVICE_API_FEATURES, PSK, X509_CERTIFICATE, Credentials, Device,
                           DeviceProfile, compact_json, new_id)
from tbcoap.events import DeviceGone, DeviceUpdated, ProfileChanged, Resync, TokenReplaced
from tbcoap.payloads.power import device_configuration
from tbcoap.services.psk import key_proof

TOKEN_CACHE_CAP = 200_000
MAX_NAME = 255
MAX_INFO = 65536


def generate_token() -> str:
    """A new random access token: 20 characters from a secure generator."""
    return secrets.token_urlsafe(15)


def check_token(token) -> str:
    """A token chosen by a caller must be non-empty text of at most 255 characters without '/',
    and not a feature name (``/api/v1/rpc/...`` is a certificate device's path)."""
    if not isinstance(token, str) or not token or len(token) > MAX_NAME or "/" in token:
        raise BadRequest("access token must be 1 to 255 characters without '/'")
    if token.lower() in DEVICE_API_FEATURES:
        raise BadRequest(f"{token!r} cannot be an access token: it names a feature of the device API")
    return token


class SessionIdentity(NamedTuple):
    """What a DTLS peer proved in its handshake: a certificate (``type`` X509_CERTIFICATE, ``id``
    its digest) or a pre-shared key (``type`` PSK, ``id`` the identity, ``proof`` the key's
    ``key_proof``, so that a session made with a key since replaced speaks for nobody)."""

    type: str
    id: str
    proof: bytes | None = None


def _checked(name, type, label, additional_info):
    """``(name, type, label, additional info as JSON text or None)`` of a device, or BadRequest."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise BadRequest("device name must be non-empty text of at most 255 characters")
    type = type or "default"
    if not isinstance(type, str) or len(type) > MAX_NAME:
        raise BadRequest("device type must be text of at most 255 characters")
    if label is not None and (not isinstance(label, str) or len(label) > MAX_NAME):
        raise BadRequest("device label must be text of at most 255 characters")
    if additional_info is not None and not isinstance(additional_info, dict):
        raise BadRequest("additionalInfo must be a JSON object")
    info = compact_json(additional_info) if additional_info else None
    if info is not None and len(info) > MAX_INFO:
        raise BadRequest(f"additionalInfo must be at most {MAX_INFO} bytes of JSON")
    return name, type, label, info


class DeviceService:
    """Everything about devices that does not depend on CoAP or HTTP."""

    def __init__(self, store, plugins, bus):
        self.store = store
        self.plugins = plugins
        self.bus = bus
        bus.subscribe(self._on_event)
        self._by_token = {}
        self._token_of = {}
        self._psk_keys = {}  # PSK identity -> (key, its proof), for the devices in _by_token
        self._changes = 0  # bumped by forget(): a lookup that raced a change is not cached

    # -- authentication -----------------------------------------------------

    def cached(self, token):
        """The Device for a token seen before, or None (then call ``authenticate``)."""
        return self._by_token.get(token)

    def cached_count(self):
        """How many tokens are cached."""
        return len(self._by_token)

    def authenticate(self, token):
        """Deferred Device or None, asking the auth plugins in order; caches the answer."""
        return self._look_up(token, lambda: self.plugins.call_first("tbcoap_authenticate", token=token,
                                                                     store=self.store))

    def cached_session(self, identity):
        """The Device a DTLS session's ``SessionIdentity`` stands for, if seen before, or None."""
        device = self._by_token.get((identity.type, identity.id))
        if device is not None and identity.type == PSK and self._psk_keys.get(identity.id, (None,))[1] != identity.proof:
            return None
        return device

    def authenticate_session(self, identity):
        """Deferred Device a DTLS session's ``SessionIdentity`` stands for, or None; caches the answer."""
        if identity.type == PSK:
            return self._psk(identity.id).addCallback(
                lambda found: found[0] if found is not None and key_proof(found[1]) == identity.proof else None)
        return self._look_up((identity.type, identity.id),
                             lambda: self.store.device_by_credentials(identity.type, identity.id))

    def cached_psk_key(self, identity):
        """The key (bytes) of a PSK identity seen before, or None."""
        known = self._psk_keys.get(identity)
        return known[0] if known is not None else None

    def psk_key(self, identity):
        """Deferred key (bytes) of a PSK identity, or None for one no device has; caches it."""
        return self._psk(identity).addCallback(lambda found: found[1] if found is not None else None)

    @defer.inlineCallbacks
    def _psk(self, identity):
        changes = self._changes
        device = yield self.store.device_by_credentials(PSK, identity)
        credentials = (yield self.store.get_credentials(device.id)) if device is not None else None
        if credentials is None or credentials.type != PSK or credentials.id != identity:
            return None
        key = bytes.fromhex(credentials.value)
        if changes == self._changes:
            self._remember(device, (PSK, identity), None, changes)
            self._psk_keys[identity] = (key, key_proof(key))
        return device, key

    def _look_up(self, key, ask):
        d = ask()
        d.addCallback(self._remember, key, ask, self._changes)
        return d

    def _remember(self, device, key, ask, changes_before):
        if device is None:
            return None
        if changes_before != self._changes:
            return ask()  # credentials changed or a device went while we asked: ask again, do not cache
        if len(self._by_token) >= TOKEN_CACHE_CAP:
            old_key = next(iter(self._by_token))
            self._token_of.pop(self._by_token.pop(old_key).id, None)
            self._forget_key(old_key)
        self._by_token[key] = device
        self._token_of[device.id] = key
        return device

    def _forget_key(self, key):
        if isinstance(key, tuple) and key[0] == PSK:
            self._psk_keys.pop(key[1], None)

    def _on_event(self, event):
        if isinstance(event, (DeviceGone, TokenReplaced, DeviceUpdated)):
            self.forget(event.device_id)
        elif isinstance(event, Resync) or (isinstance(event, ProfileChanged) and event.renamed):
            # a change made elsewhere may have been missed, or devices' types changed with their profile
            self._changes += 1
            self._by_token.clear()
            self._token_of.clear()
            self._psk_keys.clear()

    def forget(self, device_id):
        """Drop a device's cached token (after a change made here or on another node)."""
        self._changes += 1
        token = self._token_of.pop(device_id, None)
        if token is not None:
            self._by_token.pop(token, None)
            self._forget_key(token)

    # -- management -----------------------------------------------------------

    @defer.inlineCallbacks
    def create(self, name, type=None, label=None, token=None, additional_info=None, device_data=None):
        """Create a device (its profile too if ``type`` names none; no ``type``: the default
        profile); fires ``(device, token)``.

        ``additional_info`` is a JSON object (ThingsBoard's additionalInfo) or None; ``device_data``
        ThingsBoard's deviceData (its ``transportConfiguration`` holds power-saving settings) or None."""
        if not type:
            type = (yield self.store.default_profile()).name
        name, type, label, info = _checked(name, type, label, additional_info)
        transport = device_configuration(device_data)
        token = check_token(token) if token is not None else generate_token()
        yield self.ensure_profile(type)
        device = Device(id=new_id(), name=name, type=type, label=label, additional_info=info,
                        transport_configuration=transport)
        yield self.store.add_device(device, token)
        return device, token

    @defer.inlineCallbacks
    def update(self, device_id, name, type=None, label=None, additional_info=None, device_data=None):
        """Change a device's name, type, label, additional info and deviceData (ThingsBoard's save
        with an id: what the body leaves out is reset); fires the device.  NotFound if unknown."""
        name, type, label, info = _checked(name, type, label, additional_info)
        transport = device_configuration(device_data)
        current = yield self.get(device_id)
        yield self.ensure_profile(type)
        device = yield self.store.update_device(Device(id=device_id, name=name, type=type, label=label,
                                                       created_time=current.created_time,
                                                       customer_id=current.customer_id, additional_info=info,
                                                       transport_configuration=transport))
        self.forget(device_id)
        self.bus.publish(DeviceUpdated(device_id))
        return device

    @defer.inlineCallbacks
    def ensure_profile(self, name):
        """The profile of that name, created (provisioning disabled) if missing."""
        profile = yield self.store.profile_by_name(name)
        if profile is None:
            profile = DeviceProfile(id=new_id(), name=name)
            try:
                yield self.store.add_profile(profile)
            except BadRequest:
                profile = yield self.store.profile_by_name(name)
        return profile

    @defer.inlineCallbacks
    def get(self, device_id):
        """The Device, or NotFound."""
        device = yield self.store.get_device(device_id)
        if device is None:
            raise NotFound(f"device {device_id} not found")
        return device

    @defer.inlineCallbacks
    def by_name(self, name):
        """The Device of that name, or NotFound."""
        device = yield self.store.device_by_name(name)
        if device is None:
            raise NotFound(f"device named {name!r} not found")
        return device

    def page(self, page_size, page, **query):
        """Deferred ``(devices, total)`` for one page; ``query`` as ``IStore.list_devices`` takes it."""
        return self.store.list_devices(page_size, page * page_size, **query)

    @defer.inlineCallbacks
    def delete(self, device_id):
        """Delete a device and everything it owns; NotFound if unknown."""
        existed = yield self.store.delete_device(device_id)
        self.forget(device_id)
        if not existed:
            raise NotFound(f"device {device_id} not found")
        self.bus.publish(DeviceGone(device_id))

    @defer.inlineCallbacks
    def credentials(self, device_id):
        """The device's ``Credentials``, or NotFound."""
        credentials = yield self.store.get_credentials(device_id)
        if credentials is None:
            raise NotFound(f"device {device_id} not found")
        return credentials

    @defer.inlineCallbacks
    def set_credentials(self, device_id, credentials):
        """Replace the device's credential (a token, a certificate from ``certificate_credentials`` or a
        pre-shared key from ``psk_credentials``);
        the old one is refused from now on, on every node, and its observations end."""
        if credentials.type == ACCESS_TOKEN:
            check_token(credentials.id)
        old = yield self.credentials(device_id)
        yield self.store.set_credentials(device_id, credentials)
        self.forget(device_id)
        if old != credentials:
            self.bus.publish(TokenReplaced(device_id))
