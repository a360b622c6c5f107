"""Customers and their API keys (role customer), and the devices they own."""

from __future__ import annotations

import hashlib
import secrets

from twisted.internet import defer

from tbcoap.errors import BadRequest, NotFound
from tbcoap.events import CustomerGone, Resync
from tbcoap.models import Customer, new_id

MAX_TITLE = 255


def key_digest(key: str) -> str:
    """What the store keeps of an API key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class CustomerService:
    """Creates and deletes customers and tells which customer an API key belongs to (remembered
    in memory until the customer is deleted, on this node or another)."""

    def __init__(self, store, bus):
        self.store = store
        self._by_digest = {}
        self._digest_of = {}  # customer id -> the digest remembered for it
        self._changes = 0  # bumped when a customer goes: a look-up that raced it is not remembered
        bus.subscribe(self._on_event)
        self.bus = bus

    @defer.inlineCallbacks
    def create(self, title):
        """A new customer and its API key (shown once): fires ``(customer, key)``."""
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
            raise BadRequest("title must be non-empty text of at most 255 characters")
        key = secrets.token_hex(24)  # hex: never starts with "-", which a command line would take for an option
        customer = yield self.store.add_customer(Customer(id=new_id(), title=title), key_digest(key))
        return customer, key

    def page(self, page_size, page):
        """Deferred ``(customers, total)``."""
        return self.store.list_customers(page_size, page * page_size)

    @defer.inlineCallbacks
    def get(self, customer_id):
        """The Customer, or NotFound."""
        customer = yield self.store.get_customer(customer_id)
        if customer is None:
            raise NotFound(f"customer {customer_id} not found")
        return customer

    def known(self, key) -> bool:
        """True if this key was seen before as a customer's (memory only)."""
        return key_digest(key) in self._by_digest

    @defer.inlineCallbacks
    def by_key(self, key):
        """The Customer id whose API key this is, or None (remembered in memory until the customer
        is deleted, here or on another node: ``CustomerGone``)."""
        digest = key_digest(key)
        if digest not in self._by_digest:
            changes = self._changes
            customer = yield self.store.customer_by_key_digest(digest)
            if customer is None:
                return None
            if changes != self._changes:  # a customer went meanwhile: do not remember, ask again
                return (yield self.by_key(key))
            self._by_digest[digest] = customer.id
            self._digest_of[customer.id] = digest
        return self._by_digest[digest]

    @defer.inlineCallbacks
    def delete(self, customer_id):
        """Delete a customer: its key is refused from now on (on every node), its devices are free.
        NotFound if unknown."""
        if not (yield self.store.delete_customer(customer_id)):
            raise NotFound(f"customer {customer_id} not found")
        self._forget(customer_id)
        self.bus.publish(CustomerGone(customer_id))

    def _on_event(self, event):
        if isinstance(event, CustomerGone):
            self._forget(event.customer_id)
        elif isinstance(event, Resync):  # a deletion on another node may have been missed
            self._changes += 1
            self._by_digest.clear()
            self._digest_of.clear()

    def _forget(self, customer_id):
        self._changes += 1
        digest = self._digest_of.pop(customer_id, None)
        if digest is not None:
            self._by_digest.pop(digest, None)

    def devices(self, customer_id, page_size, page, **query):
        """Deferred ``(devices, total)`` the customer owns; ``query`` as ``IStore.list_devices`` takes it."""
        return self.store.list_customer_devices(customer_id, page_size, page * page_size, **query)

    @defer.inlineCallbacks
    def by_title(self, title):
        """The Customer with that title, or NotFound."""
        customer = yield self.store.customer_by_title(title)
        if customer is None:
            raise NotFound(f"no customer titled {title!r}")
        return customer
