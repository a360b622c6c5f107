"""The SQLite schema as an ordered list of migration steps.

``PRAGMA user_version`` records how many steps a database has run.  Later
features append steps (never edit a released one); each step is SQL text
or a callable taking the connection, run in one transaction with the
version bump.
"""

import sqlite3

from tbcoap.errors import StoreUnavailable
from tbcoap.models import new_id, now_ms

_V1 = """
CREATE TABLE device_profiles (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    provision_type   TEXT NOT NULL,
    provision_key    TEXT UNIQUE,
    provision_secret TEXT,
    created_time     INTEGER NOT NULL
);
CREATE INDEX device_profiles_by_creation ON device_profiles (created_time, id);

CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    type         TEXT NOT NULL,
    label        TEXT,
    created_time INTEGER NOT NULL,
    customer_id  TEXT
);
CREATE INDEX devices_by_creation ON devices (created_time, id);

CREATE TABLE credentials (
    token     TEXT PRIMARY KEY,
    device_id TEXT NOT NULL UNIQUE
) WITHOUT ROWID;

-- value has no declared type: SQLite keeps the INTEGER/REAL/TEXT it is given.
CREATE TABLE ts_kv (
    device_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    ts        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    value,
    PRIMARY KEY (device_id, key, ts)
) WITHOUT ROWID;

CREATE TABLE ts_kv_latest (
    device_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    ts        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    value,
    PRIMARY KEY (device_id, key)
) WITHOUT ROWID;

CREATE TABLE attributes (
    device_id      TEXT NOT NULL,
    scope          TEXT NOT NULL,
    key            TEXT NOT NULL,
    kind           TEXT NOT NULL,
    value,
    last_update_ts INTEGER NOT NULL,
    PRIMARY KEY (device_id, scope, key)
) WITHOUT ROWID;
"""

# Server-side RPCs.  rpc_counters holds the last request id given to each
# device, apart from the rpcs rows, so an id is never given twice even after
# its RPC was deleted.
_V2 = """
CREATE TABLE rpcs (
    id              TEXT PRIMARY KEY,
    device_id       TEXT NOT NULL,
    request_id      INTEGER NOT NULL,
    method          TEXT NOT NULL,
    params_json     TEXT NOT NULL,
    oneway          INTEGER NOT NULL,
    persistent      INTEGER NOT NULL,
    expiration_time INTEGER NOT NULL,
    created_time    INTEGER NOT NULL,
    status          TEXT NOT NULL,
    response_json   TEXT,
    UNIQUE (device_id, request_id)
);
CREATE INDEX rpcs_pending ON rpcs (device_id, request_id)
    WHERE status IN ('QUEUED', 'SENT', 'DELIVERED');

CREATE TABLE rpc_counters (
    device_id       TEXT PRIMARY KEY,
    last_request_id INTEGER NOT NULL
) WITHOUT ROWID;
"""

# Customers (API keys kept as SHA-256 digests), device claiming and provisioning.
# devices.customer_id exists since the first step; it gains an index here.
_V3 = """
CREATE TABLE customers (
    id           TEXT PRIMARY KEY,
    title        TEXT NOT NULL,
    created_time INTEGER NOT NULL,
    key_digest   TEXT NOT NULL UNIQUE
);
CREATE INDEX customers_by_creation ON customers (created_time, id);

CREATE INDEX devices_by_customer ON devices (customer_id, created_time, id);

CREATE TABLE claim_requests (
    device_id       TEXT PRIMARY KEY,
    secret          TEXT NOT NULL,
    expiration_time INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE provisioned (
    device_id TEXT PRIMARY KEY
) WITHOUT ROWID;
"""

# Customers are found by title (ThingsBoard's customerTitle look-up; titles are unique
# from here on, a database that already holds two of one title keeps them).
_V4 = """
CREATE INDEX customers_by_title ON customers (title, created_time, id);
"""

# ThingsBoard's additionalInfo on devices; a time to live per telemetry point; the provisioned
# mark becomes the SERVER_SCOPE attribute provisionState, as ThingsBoard keeps it.
_V5 = """
ALTER TABLE devices ADD COLUMN additional_info TEXT;
ALTER TABLE ts_kv ADD COLUMN expires INTEGER;
CREATE INDEX ts_kv_expiring ON ts_kv (expires) WHERE expires IS NOT NULL;
INSERT OR IGNORE INTO attributes (device_id, scope, key, kind, value, last_update_ts)
    SELECT device_id, 'SERVER_SCOPE', 'provisionState', 'STRING', 'provisioned',
           CAST(strftime('%s', 'now') AS INTEGER) * 1000 FROM provisioned;
DROP TABLE provisioned;
"""

# A device's credential may be an X.509 certificate: ``token`` holds the credentials id (the
# token, or the certificate's digest; unique across both), ``value`` the certificate's PEM.
_V6 = """
ALTER TABLE credentials ADD COLUMN type TEXT NOT NULL DEFAULT 'ACCESS_TOKEN';
ALTER TABLE credentials ADD COLUMN value TEXT;
"""

# Retention: a lower bound of each series' oldest point, indexed, so a pass finds the series with
# expired points without scanning and deletes neighbouring rows of one series at a time.
_V7 = """
CREATE TABLE ts_kv_series (
    device_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    oldest    INTEGER NOT NULL,
    PRIMARY KEY (device_id, key)
) WITHOUT ROWID;
CREATE INDEX ts_kv_series_by_oldest ON ts_kv_series (oldest);
INSERT INTO ts_kv_series (device_id, key, oldest) SELECT device_id, key, min(ts) FROM ts_kv GROUP BY device_id, key;
"""

# A device profile's transport configuration (payload type, Protobuf schemas, client settings):
# ThingsBoard's profileData.transportConfiguration as compact JSON text, NULL for a JSON profile.
_V8 = """
ALTER TABLE device_profiles ADD COLUMN transport_configuration TEXT;
"""

# The default device profile is chosen, not a name: one row naming it (the profile called
# ``default`` until another is chosen); devices are found by type (a profile in use is not deleted).
_V9 = """
CREATE TABLE default_profile (
    one        INTEGER PRIMARY KEY CHECK (one = 1),
    profile_id TEXT NOT NULL
);
INSERT INTO default_profile (one, profile_id) SELECT 1, id FROM device_profiles WHERE name = 'default';
CREATE INDEX devices_by_type ON devices (type);
"""

# A device's own transport configuration (ThingsBoard's deviceData.transportConfiguration: its
# power-saving settings over its profile's), compact JSON text, NULL when it has none.
_V_DEVICE_TRANSPORT = """
ALTER TABLE devices ADD COLUMN transport_configuration TEXT;
"""

# Firmware and software packages (OTA): their info, their data in chunks (an upload writes its
# chunks under its own data_id first; finishing points the package at them), and which package
# each profile or device has assigned (entity_id is a device's or a profile's id).
_V_OTA = """
CREATE TABLE ota_packages (
    id                 TEXT PRIMARY KEY,
    title              TEXT NOT NULL,
    version            TEXT NOT NULL,
    type               TEXT NOT NULL,
    device_profile_id  TEXT NOT NULL,
    tag                TEXT,
    created_time       INTEGER NOT NULL,
    file_name          TEXT,
    content_type       TEXT,
    data_size          INTEGER,
    checksum_algorithm TEXT,
    checksum           TEXT,
    data_id            TEXT,
    UNIQUE (title, version, type, device_profile_id)
);
CREATE INDEX ota_packages_by_creation ON ota_packages (created_time, id);
CREATE TABLE ota_chunks (
    data_id TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    UNIQUE (data_id, idx)
);
CREATE TABLE ota_assignments (
    entity_id  TEXT NOT NULL,
    type       TEXT NOT NULL,
    package_id TEXT NOT NULL,
    PRIMARY KEY (entity_id, type)
) WITHOUT ROWID;
CREATE INDEX ota_assignments_by_package ON ota_assignments (package_id);
"""

# Rollups (rollups.py): per series, resolution and bucket the count, sums, minima and maxima of its
# points; ``rolled`` the series' watermark (a day start: the rows below it are complete, except on
# its dirty days); a series starts with nothing rolled (its oldest point's day).
_V_ROLLUPS = """
CREATE TABLE ts_kv_rollup (
    device_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    res       INTEGER NOT NULL,
    bucket    INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    nl        INTEGER NOT NULL,
    nd        INTEGER NOT NULL,
    sl, sd, minl, maxl, mind, maxd,
    PRIMARY KEY (device_id, key, res, bucket)
) WITHOUT ROWID;
CREATE TABLE ts_kv_dirty (
    device_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    day       INTEGER NOT NULL,
    PRIMARY KEY (device_id, key, day)
) WITHOUT ROWID;
ALTER TABLE ts_kv_series ADD COLUMN rolled INTEGER;
UPDATE ts_kv_series SET rolled = oldest - ((oldest % 86400000) + 86400000) % 86400000;
CREATE INDEX ts_kv_series_by_rolled ON ts_kv_series (rolled);
"""

MIGRATIONS = [_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V_DEVICE_TRANSPORT, _V_OTA, _V_ROLLUPS]
SCHEMA_VERSION = len(MIGRATIONS)


def version(conn):
    """The number of migration steps the database has run."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn):
    """Run the missing steps, one transaction each; ``conn`` is in autocommit mode.

    The version is read under the write lock, so two processes opening one
    new file do not both run a step.
    """
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = version(conn)
            if current > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"database schema version {current} is newer than this tbcoap "
                    f"supports ({SCHEMA_VERSION}); upgrade tbcoap"
                )
            if current == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return
            step = MIGRATIONS[current]
            if callable(step):
                step(conn)
            else:
                for statement in _statements(step):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {current + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def ensure_default_profile(conn):
    """Give a store without a default profile one: the profile named ``default``, created if missing
    (a store whose default was chosen keeps it)."""
    chosen = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'default_profile'").fetchone()
    if chosen and conn.execute("SELECT 1 FROM default_profile").fetchone():
        return
    conn.execute(
        "INSERT OR IGNORE INTO device_profiles (id, name, provision_type, created_time)"
        " VALUES (?, 'default', 'DISABLED', ?)",
        (new_id(), now_ms()),
    )
    if chosen:  # (a database of fewer steps has no choice to record: only tests open one)
        conn.execute("INSERT INTO default_profile (one, profile_id) SELECT 1, id FROM device_profiles"
                     " WHERE name = 'default'")


def _statements(script):
    """Split SQL text into complete statements (execute() takes one at a time)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                yield pending.strip()
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:60]}")
