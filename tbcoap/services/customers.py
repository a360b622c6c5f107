"""Customers and their API keys (role customer), and the devices they own."""

from __future__ import annotations

import hashlib
import secrets

from twisted.internet import defer

from tbcoap.errors import BadRequest, NotFound
from tbcoap.models import Customer, new_id

MAX_TITLE = 255


def key_digest(key: str) -> str:
    """What the store keeps of an API key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class CustomerService:
    """Creates customers and tells which customer an API key belongs to."""

    def __init__(self, store):
        self.store = store
        self._by_digest = {}

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
        """The Customer id whose API key this is, or None (remembered in memory)."""
        digest = key_digest(key)
        if digest not in self._by_digest:
            customer = yield self.store.customer_by_key_digest(digest)
            if customer is None:
                return None
            self._by_digest[digest] = customer.id
        return self._by_digest[digest]

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
