"""The Redis store's calls for customers, deleting profiles and choosing the default profile
(mixed into RedisStore, whose ``_read`` and ``_write`` run the scripts of lua/)."""

from twisted.internet import defer

from tbcoap.errors import BadRequest, DuplicateName, NotFound
from tbcoap.storekit import check_customer, check_owner_change, is_id

from .records import as_customer, as_profile


class ManagementCalls:
    """Customers (add, find, list, delete, own devices) and the profile calls beyond saving."""

    def add_customer(self, customer, key_digest):
        try:
            check_customer(customer, key_digest)
        except BadRequest:
            return defer.fail()
        d = self._write("add_customer", "customer", customer.id, customer.title, customer.created_time, key_digest)

        def done(reply):
            return customer

        def duplicate_title(failure):
            failure.trap(DuplicateName)
            raise DuplicateName(f"a customer titled {customer.title!r} exists")

        return d.addCallbacks(done, duplicate_title)

    def _customer_by(self, index, value):
        if not is_id(value):
            return defer.succeed(None)
        return self._read("customer_by", index, value).addCallback(lambda row: as_customer(row) if row else None)

    def get_customer(self, customer_id):
        return self._customer_by("", customer_id)

    def customer_by_key_digest(self, key_digest):
        return self._customer_by("key", key_digest)

    def customer_by_title(self, title):
        return self._customer_by("title", title)

    def list_customers(self, limit, offset):
        return self._page("custs", ("id", "title", "created"), as_customer, limit, offset)

    def set_device_customer(self, device_id, customer_id, expect_customer_id):
        try:
            check_owner_change(customer_id, expect_customer_id)
        except BadRequest:
            return defer.fail()
        d = self._write("set_device_customer", "device", device_id, customer_id or "", expect_customer_id or "")
        return d.addCallback(lambda n: int(n) == 1)

    def delete_customer(self, customer_id):
        if not is_id(customer_id):
            return defer.succeed(False)
        return self._write("delete_customer", "customer", customer_id).addCallback(lambda n: int(n) == 1)

    # -- profiles beyond saving ----------------------------------------------------------

    def _profile_of(self, what, value=""):
        return self._read("profile_of", what, value).addCallback(lambda row: as_profile(row) if row else None)

    def get_profile(self, profile_id):
        if not is_id(profile_id):
            return defer.succeed(None)
        return self._profile_of("id", profile_id)

    def default_profile(self):
        return self._profile_of("default")

    def set_default_profile(self, profile_id):
        if not is_id(profile_id):
            return defer.fail(NotFound(f"no device profile with id {profile_id}"))
        d = self._write("set_default_profile", "device profile", profile_id)
        return d.addCallback(as_profile).addErrback(_no_profile, profile_id)

    def delete_profile(self, profile_id):
        if not is_id(profile_id):
            return defer.succeed(False)
        return self._write("delete_profile", "device profile", profile_id).addCallback(_deleted_profile)


def _no_profile(failure, profile_id):
    failure.trap(NotFound)
    raise NotFound(f"no device profile with id {profile_id}")


def _deleted_profile(reply):
    if reply == "DEFAULT":
        raise BadRequest("the default device profile cannot be deleted: make another the default first")
    if reply == "INUSE":
        raise BadRequest("this device profile is used by devices: change or delete them first")
    return int(reply) == 1
