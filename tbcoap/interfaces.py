"""zope.interface contracts between tbcoap and its plugins.

Every IStore method but ``stats`` and ``bus`` returns a Deferred (klein's session store does
the same); stores raise the errors of ``tbcoap.errors`` through it.  tbcoap calls them from the
reactor thread only.  Typed values are ``bool``, ``int``, ``float``, ``str`` or
``tbcoap.models.Json``.  Timestamps are integers, milliseconds since the epoch.  The contract
suite ``tbcoap.testing.store_contract`` checks a store against all of this (``verifyObject``
included, so the attributes below are required too); tests/test_store_contract.py runs it
against every bundled backend, and a store plugin runs it from its own tests.
"""

from zope.interface import Attribute, Interface

STORE_STATS = {
    "queueDepth": "writes accepted and not yet answered (/metrics: tbcoap_store_queue_depth)",
    "writes": "writes committed so far (retention yields more while it grows between two of its batches)",
    "commits": "commits so far (several writes may share one)",
}
"""The keys every ``IStore.stats()`` has, each an int, and what they count; a store may add its own."""


class IDeviceStore(Interface):
    """Devices, their credentials and device profiles."""

    def add_device(device, token):
        """Store a new ``Device`` with an access token as its credential.

        Fails with DuplicateName if the name is taken, DuplicateToken if the
        token is.
        """

    def update_device(device):
        """Replace a device's name, type, label, additional_info and transport_configuration (found by
        its id); fires the Device.  NotFound if no such device, DuplicateName if another device has the name."""

    def get_device(device_id):
        """The ``Device`` with that id, or None."""

    def device_by_name(name):
        """The ``Device`` with that name, or None."""

    def device_by_credentials(credentials_type, credentials_id):
        """The ``Device`` whose credential has this type (``ACCESS_TOKEN``, ``X509_CERTIFICATE`` or
        ``PSK``) and id (the token, the certificate's digest, the PSK identity), or None. An id of
        one type never finds a device whose credential is of another."""

    def list_devices(limit, offset, text_search=None, sort_property="createdTime", descending=False):
        """``(devices, total)``: a page of devices and how many match.

        ``text_search``: only devices whose name contains it, ignoring case.
        ``sort_property``: ``createdTime``, ``name``, ``type`` or ``label`` (BadRequest
        for another), ties broken by id.  The store searches and sorts: this must stay
        fast with 100,000 devices.
        """

    def delete_device(device_id):
        """Delete a device with its token, telemetry, attributes (``provisionState`` among them),
        RPCs and claim request; True if it existed."""

    def get_credentials(device_id):
        """The device's ``Credentials``, or None if the device does not exist."""

    def set_credentials(device_id, credentials):
        """Replace the device's credential with ``Credentials`` (the old one stops working), checked
        with ``storekit.check_credentials``; type, id and value are kept as they are. DuplicateToken
        if another device has that id (ids are unique across types), NotFound if no such device."""

    def add_profile(profile):
        """Store a new ``DeviceProfile`` (DuplicateName if the name is taken,
        BadRequest if its provision key is used by another profile)."""

    def update_profile(profile):
        """Replace a profile's name and provisioning fields (found by its id); fires the profile.
        Devices whose ``type`` named it are renamed with it.  NotFound if no such profile,
        DuplicateName if another has the name, BadRequest if another has the provision key."""

    def profile_by_name(name):
        """The ``DeviceProfile`` with that name, or None."""

    def list_profiles(limit, offset):
        """``(profiles, total)``, ordered by creation."""

    def get_profile(profile_id):
        """The ``DeviceProfile`` with that id, or None."""

    def default_profile():
        """The default ``DeviceProfile``: the one a device created without a type gets.  A new
        store's default is the profile named ``default``, which ``open`` creates."""

    def set_default_profile(profile_id):
        """Make that profile the default (one default at a time); fires the profile.  NotFound if no
        such profile."""

    def delete_profile(profile_id):
        """Delete a profile; True if it existed.  BadRequest (nothing changes) when it is the
        default or a device's ``type`` names it."""


class ITelemetryStore(Interface):
    """Time series: history and latest values per key."""

    def save_telemetry(device_id, entries, ttl=None):
        """Commit ``entries``, a sequence of ``(ts, key, value)``, all or nothing.

        Fires only once the data is durable (the device's 2.01 waits for it).
        Two values of one key with the same ts: the later write wins.  ``ttl`` (ms): the
        points may be removed once ``ts + ttl`` has passed (the store keeps that time with them).
        """

    def expire_telemetry(now, older_than, limit):
        """Delete expired history points: ``ts < older_than`` (None: no age limit) or a time to live
        that ended at or before ``now``.  Latest values stay.  One call stays short: it deletes at
        most ``limit`` points and examines at most ``limit`` series.  Fires with ``(deleted, more)``:
        ``more`` is True when the call stopped at a limit (call again), False when nothing more
        has expired."""

    def delete_telemetry(device_id, keys, start_ts, end_ts, delete_latest=True, rewrite_latest=False):
        """Delete the points of ``keys`` with start_ts <= ts < end_ts.  A latest value in that range
        goes too (unless ``delete_latest`` is False); with ``rewrite_latest`` the newest point left,
        if any, becomes the latest.  NotFound if no such device."""

    def latest_telemetry(device_id, keys):
        """``{key: (ts, value)}`` of the latest values; ``keys`` None means all."""

    def telemetry_history(device_id, keys, start_ts, end_ts, limit, descending):
        """``{key: [(ts, value), ...]}`` with start_ts <= ts <= end_ts, at most
        ``limit`` per key, ordered by ts; ``keys`` None means all keys."""

    def telemetry_aggregate(device_id, keys, start_ts, end_ts, interval, agg, limit, descending):
        """``{key: [(ts, value), ...]}``: one point per bucket ``[start_ts + k*interval, start_ts +
        (k+1)*interval)`` (the last one cut at ``end_ts``, excluded) that holds values, ``ts`` the
        bucket's middle (its start plus half its length, rounded down).

        ``agg`` is AVG, MIN, MAX or SUM over LONG and DOUBLE values only (others skipped; AVG is a
        float, SUM an int when every value is, MIN and MAX the value itself), or COUNT of every
        value (an int).  At most ``limit`` buckets per key, the first ones in the order asked; the
        store computes them (a year of points is never read into Python).  ``keys`` None: all.

        A store may keep rollups to answer without reading every point (tbcoap.rollupkit); it then
        also has ``rollup_telemetry(now, limit)``, which the retention passes call: it brings the
        rollups up to the day of ``now`` (dirty days first, then whole days behind each series'
        watermark), reading about ``limit`` points (at least one day of one series) and examining
        at most ``limit`` series, and fires with ``(points, more)`` like ``expire_telemetry``.
        Answers are the same whether or not it ran; it makes them fast."""

    def telemetry_keys(device_id):
        """Sorted list of the device's time-series keys."""

    def count_telemetry_keys(device_id, keys):
        """``(count, present)``: how many time-series keys the device has (those ``telemetry_keys``
        lists) and the list of those of ``keys`` (a list) among them; ``(0, [])`` for an unknown
        device.  Cheap: the node asks it before a device's first write of a key it has not seen
        (``--max-device-keys``), so it must not read the device's keys into Python."""

    def telemetry_key_page(device_id, limit, offset):
        """``(keys, total)``: at most ``limit`` of the device's time-series keys in key order (code
        point order), from ``offset`` on, and how many it has; ``([], 0)`` for an unknown device.
        The console pages a device's keys with it: it reads no more keys than the page."""


class IAttributeStore(Interface):
    """Attributes in CLIENT_SCOPE, SHARED_SCOPE and SERVER_SCOPE."""

    def save_attributes(device_id, scope, values, ts):
        """Commit ``values`` (``{key: value}``) into the scope, all or nothing, durably."""

    def get_attributes(device_id, scope, keys):
        """``{key: (value, last_update_ts)}``; ``keys`` None means all."""

    def delete_attributes(device_id, scope, keys):
        """Delete those keys; fires with the list of keys that existed."""

    def count_attribute_keys(device_id, scope, keys):
        """``(count, present)``: how many attributes the device has in the scope and the list of
        those of ``keys`` (a list) among them; ``(0, [])`` for an unknown device.  Cheap, as
        ``count_telemetry_keys``."""

    def attribute_key_page(device_id, scope, limit, offset):
        """``(keys, total)`` of the device's attributes in the scope, paged as ``telemetry_key_page``."""


class IRpcStore(Interface):
    """Server-side RPCs: per-device ids that are never reused, statuses, responses."""

    def add_rpc(rpc):
        """Store a new ``Rpc`` (its ``request_id`` ignored) with the device's next request id.

        The id is one more than the last id ever given to that device (1 for
        the first), counted durably, also across restarts.  Fires the stored
        ``Rpc``; NotFound if the device does not exist.
        """

    def get_rpc(rpc_id):
        """The ``Rpc`` with that uuid, or None."""

    def rpc_by_request_id(device_id, request_id):
        """The device's ``Rpc`` with that integer id, or None."""

    def set_rpc_status(rpc_id, status, response_json=None, expect=None):
        """Set the status (and the response when not None) if the current status is in
        ``expect`` (any status when None); fires True if it changed, False if not."""

    def pending_rpcs(device_id=None):
        """Not yet final RPCs (QUEUED, SENT, DELIVERED), of one device or of all, by request id."""

    def list_rpcs(device_id, limit, offset):
        """``(rpcs, total)`` of one device, newest first."""

    def delete_rpc(rpc_id):
        """Delete an RPC; True if it existed."""


class ICustomerStore(Interface):
    """Customers, their API keys (kept as SHA-256 hex digests) and the devices they own."""

    def add_customer(customer, key_digest):
        """Store a new ``Customer`` with the digest of its API key; fires the customer.

        DuplicateName if a customer has that title.
        """

    def get_customer(customer_id):
        """The ``Customer``, or None."""

    def customer_by_title(title):
        """The ``Customer`` with that title (the oldest, should there be several), or None."""

    def customer_by_key_digest(key_digest):
        """The ``Customer`` whose API key has that digest, or None."""

    def list_customers(limit, offset):
        """``(customers, total)``, ordered by creation."""

    def delete_customer(customer_id):
        """Delete a customer and its API key (its digest finds nobody from now on); the devices it
        owned become free (``customer_id`` None); True if it existed."""

    def set_device_customer(device_id, customer_id, expect_customer_id):
        """Set the device's owner (None frees it) if its owner is now ``expect_customer_id``
        (None: free); fires True if it changed, False if not (NotFound if no device or customer)."""

    def list_customer_devices(customer_id, limit, offset, text_search=None, sort_property="createdTime",
                              descending=False):
        """``(devices, total)`` owned by the customer, searched and sorted as ``list_devices``."""


class IClaimStore(Interface):
    """Claim requests made by devices (one per device)."""

    def put_claim_request(request, now):
        """Store a ``ClaimRequest`` unless the device has one that has not expired at ``now``
        (first request wins until it expires); fires True if stored."""

    def get_claim_request(device_id):
        """The device's ``ClaimRequest`` (expired or not), or None."""

    def delete_claim_request(device_id):
        """Remove the device's claim request; True if there was one."""


class IProvisionStore(Interface):
    """What provisioning needs beyond devices and profiles."""

    def profile_by_provision_key(key):
        """The ``DeviceProfile`` with that provision key, or None."""

    def mark_provisioned(device_id):
        """Give the device the SERVER_SCOPE attribute ``provisionState`` = ``"provisioned"`` unless
        it has one (of any value); fires True if it was set, False if one was there.  Deleting
        that attribute allows provisioning again."""


class IOtaStore(Interface):
    """Firmware and software packages (``OtaPackage``), their data in chunks of ``models.OTA_CHUNK``
    bytes (never one whole package in memory), and their assignment to profiles and devices."""

    def add_ota_package(package):
        """Store a new ``OtaPackage`` without data (``data_id`` None); fires it.  DuplicateName if a
        package of that title, version, type and profile exists; NotFound if no such profile."""

    def get_ota_package(package_id):
        """The ``OtaPackage``, or None."""

    def list_ota_packages(limit, offset, profile_id=None, ota_type=None):
        """``(packages, total)`` ordered by creation; with ``profile_id`` and ``ota_type``, only the
        packages of that profile and type that have data."""

    def write_ota_chunk(upload_id, index, data):
        """Keep chunk number ``index`` (bytes, at most OTA_CHUNK; every chunk but the last exactly
        OTA_CHUNK) of the upload ``upload_id``, not part of any package until ``finish_ota_data``."""

    def finish_ota_data(package):
        """Give the package of ``package.id`` the data of the upload ``package.data_id`` (its chunks,
        written before) with the file fields of ``package`` (file_name, content_type, data_size,
        checksum_algorithm, checksum); fires the stored package.  BadRequest if the package has data
        already (as ThingsBoard, data is never replaced); NotFound if no such package.  On a refusal
        the upload's chunks are removed."""

    def discard_ota_upload(upload_id):
        """Remove the chunks of an upload that was not finished."""

    def read_ota_data(package_id, offset, length):
        """At most ``length`` bytes of the package's data from ``offset`` (fewer at the end, b"" past
        it), reading only the chunks the range touches.  NotFound if no such package or no data."""

    def delete_ota_package(package_id):
        """Delete a package and its data; True if it existed.  BadRequest (nothing changes) while a
        profile or device has it assigned."""

    def set_ota_assignment(entity_id, ota_type, package_id):
        """Assign the package (None: none) of ``ota_type`` to a device or profile (its id).  NotFound if
        no such device or profile or package; BadRequest if the package is of another type."""

    def ota_assignments(entity_id):
        """``{ota_type: package_id}`` assigned to that device or profile (no entry: none)."""

    def ota_package_devices(package_id, limit, offset):
        """``(devices, total)``: the devices whose package of that type is this one (their own, or
        their profile's when they have none of their own), ordered by creation."""


class IBus(Interface):
    """Carries change events (``tbcoap.events``) to every subscriber, on this node and, for a store
    shared by several nodes, on the others."""

    def subscribe(callback):
        """Call ``callback(event)`` for every event from now on (own and other nodes')."""

    def publish(event):
        """Deliver ``event`` here at once, and to the other nodes if any."""

    def start():
        """Connect; fires once events from other nodes arrive (before the node serves)."""

    def close():
        """Disconnect; fires when done."""


class IStore(IDeviceStore, ITelemetryStore, IAttributeStore, IRpcStore, ICustomerStore, IClaimStore,
             IProvisionStore, IOtaStore):
    """Everything a storage backend provides."""

    name = Attribute("Short backend name, e.g. 'sqlite' (in the start-up line, /metrics and /api/health).")

    commit_latency = Attribute(
        "A tbcoap.latency.LatencyHistogram in which the store observes how long each commit took, in "
        "seconds (a batch of writes committed together counts once); /metrics exposes it as "
        "tbcoap_store_commit_duration_seconds.")

    backup_type = Attribute(
        "``(media type, file suffix)`` of the file ``backup`` writes, e.g. ``('application/vnd.sqlite3', "
        "'sqlite3')``: GET /api/admin/backup sends it with that Content-Type, named tbcoap-STAMP.SUFFIX.  "
        "None for a store whose ``backup`` fails with NotSupported.")

    def open():
        """Connect, create or migrate the schema; fires when ready.  Fails with StoreUnavailable
        whose message names the cause in one line (a refused connection, a wrong password, ...)."""

    def close():
        """Finish (commit and answer) pending writes, then release resources."""

    def check():
        """Fire with None if the store works now, fail with StoreUnavailable if not: also when
        it cannot complete writes (a write has waited more than 5 s), not only when it is down."""

    def backup(path):
        """Write a consistent snapshot of the whole store to the new file ``path`` while the store
        keeps serving; fires when it is complete.  A store with backups of its own fails with
        NotSupported, saying what to use instead."""

    def stats():
        """A plain dict of counters, returned directly, not a Deferred: every key of STORE_STATS
        (an int each), and any of the store's own."""

    def bus():
        """An ``IBus`` that carries events between the nodes sharing this store, or None for a
        store one node uses alone (that node then uses a ``tbcoap.events.LocalBus``).  Returned
        directly; the node starts it after ``open`` and before it serves."""
