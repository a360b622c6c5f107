"""The PostgreSQL schema as an ordered list of migration steps, run at start.

Every table lives in the URL's schema (default ``tbcoap``).  ``schema_version`` records how many
steps the database has run; later features append steps (never edit a released one).  Starting
nodes take an advisory lock, so two of them never run a step twice.

Typed values are kept in one column per kind (``b`` boolean, ``l`` bigint for LONG, ``d`` double
precision for DOUBLE, ``s`` text for STRING, ``j`` text for JSON); the others are NULL, which
costs no space.  Text columns that are compared or sorted use the "C" collation (byte order,
the same on every server).
"""

from __future__ import annotations

import zlib

from psycopg import sql

from tbcoap.errors import StoreUnavailable
from tbcoap.models import new_id, now_ms

from . import partitions

_V1 = """
CREATE TABLE device_profiles (
    id               text COLLATE "C" PRIMARY KEY,
    name             text COLLATE "C" NOT NULL UNIQUE,
    provision_type   text NOT NULL,
    provision_key    text COLLATE "C" UNIQUE,
    provision_secret text,
    created_time     bigint NOT NULL
);
CREATE INDEX device_profiles_by_creation ON device_profiles (created_time, id);

CREATE TABLE devices (
    id              text COLLATE "C" PRIMARY KEY,
    name            text COLLATE "C" NOT NULL UNIQUE,
    type            text COLLATE "C" NOT NULL,
    label           text COLLATE "C",
    created_time    bigint NOT NULL,
    customer_id     text COLLATE "C",
    additional_info text,
    fold            text COLLATE "C" NOT NULL  -- the name case-folded (Python's casefold), for searches
);
CREATE INDEX devices_by_creation ON devices (created_time, id);
CREATE INDEX devices_by_type ON devices (type, id);
CREATE INDEX devices_by_label ON devices (label NULLS FIRST, id);
CREATE INDEX devices_by_customer ON devices (customer_id, created_time, id);

-- a device's one credential: an access token or a certificate's digest (id), unique across both
CREATE TABLE credentials (
    id        text COLLATE "C" PRIMARY KEY,
    device_id text COLLATE "C" NOT NULL UNIQUE,
    type      text NOT NULL,
    value     text
);

CREATE TABLE customers (
    id           text COLLATE "C" PRIMARY KEY,
    title        text COLLATE "C" NOT NULL UNIQUE,
    created_time bigint NOT NULL,
    key_digest   text COLLATE "C" NOT NULL UNIQUE
);
CREATE INDEX customers_by_creation ON customers (created_time, id);

CREATE TABLE attributes (
    device_id      text COLLATE "C" NOT NULL,
    scope          text COLLATE "C" NOT NULL,
    key            text COLLATE "C" NOT NULL,
    last_update_ts bigint NOT NULL,
    l bigint, d double precision, b boolean, s text, j text,
    PRIMARY KEY (device_id, scope, key)
);

-- server-side RPCs; rpc_counters keeps the last request id given to a device apart from the rows,
-- so that an id is never given twice, also after its RPC was deleted
CREATE TABLE rpcs (
    id              text COLLATE "C" PRIMARY KEY,
    device_id       text COLLATE "C" NOT NULL,
    request_id      bigint NOT NULL,
    method          text NOT NULL,
    params_json     text NOT NULL,
    oneway          boolean NOT NULL,
    persistent      boolean NOT NULL,
    expiration_time bigint NOT NULL,
    created_time    bigint NOT NULL,
    status          text NOT NULL,
    response_json   text,
    UNIQUE (device_id, request_id)
);
CREATE INDEX rpcs_pending ON rpcs (device_id, request_id) WHERE status IN ('QUEUED', 'SENT', 'DELIVERED');

CREATE TABLE rpc_counters (
    device_id       text COLLATE "C" PRIMARY KEY,
    last_request_id bigint NOT NULL
);

CREATE TABLE claim_requests (
    device_id       text COLLATE "C" PRIMARY KEY,
    secret          text NOT NULL,
    expiration_time bigint NOT NULL
);

-- time series: one row per (device, key) gives the history rows a small id; ``oldest`` is a lower
-- bound of the ts of its oldest history point (NULL: no history), for retention
CREATE TABLE series (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id text COLLATE "C" NOT NULL,
    key       text COLLATE "C" NOT NULL,
    oldest    bigint,
    UNIQUE (device_id, key)
);
CREATE INDEX series_by_oldest ON series (oldest) WHERE oldest IS NOT NULL;

-- the latest value of each series, apart from the history
CREATE TABLE ts_kv_latest (
    device_id text COLLATE "C" NOT NULL,
    key       text COLLATE "C" NOT NULL,
    ts        bigint NOT NULL,
    l bigint, d double precision, b boolean, s text, j text,
    PRIMARY KEY (device_id, key)
) WITH (fillfactor = 70);

-- the history, partitioned by time (one partition a month; see partitions.py); ``expires`` is
-- ts + the point's own time to live, if it has one
CREATE TABLE ts_kv (
    ts      bigint NOT NULL,
    series  bigint NOT NULL,
    l bigint, d double precision, expires bigint, b boolean, s text, j text,
    PRIMARY KEY (series, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX ts_kv_expiring ON ts_kv (expires) WHERE expires IS NOT NULL;

-- series of deleted devices whose history retention still has to delete (a few rows at a time)
CREATE TABLE ts_kv_purge (
    series bigint PRIMARY KEY
);

-- events between nodes too large for a NOTIFY payload; the notification carries the id
CREATE TABLE bus_events (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created bigint NOT NULL,
    payload text NOT NULL
);
"""

# A device profile's transport configuration (payload type, Protobuf schemas, client settings):
# ThingsBoard's profileData.transportConfiguration as compact JSON text, NULL for a JSON profile.
_V3 = """
ALTER TABLE device_profiles ADD COLUMN transport_configuration text;
"""

# The default device profile is chosen, not a name: one row naming it (the profile called
# ``default`` until another is chosen).
_V4 = """
CREATE TABLE default_profile (
    one        integer PRIMARY KEY CHECK (one = 1),
    profile_id text COLLATE "C" NOT NULL
);
INSERT INTO default_profile (one, profile_id) SELECT 1, id FROM device_profiles WHERE name = 'default';
"""

# A device's own transport configuration (ThingsBoard's deviceData.transportConfiguration: its
# power-saving settings over its profile's), compact JSON text, NULL when it has none.
_V_DEVICE_TRANSPORT = """
ALTER TABLE devices ADD COLUMN transport_configuration text;
"""

# Firmware and software packages (OTA): their info, their data in chunks (an upload writes its
# chunks under its own data_id first; finishing points the package at them; kept uncompressed, so
# a range is read from the TOAST chunks it touches only), and which package each profile or device
# has assigned (entity_id is a device's or a profile's id).
_V_OTA = """
CREATE TABLE ota_packages (
    id                 text COLLATE "C" PRIMARY KEY,
    title              text COLLATE "C" NOT NULL,
    version            text COLLATE "C" NOT NULL,
    type               text NOT NULL,
    device_profile_id  text COLLATE "C" NOT NULL,
    tag                text,
    created_time       bigint NOT NULL,
    file_name          text,
    content_type       text,
    data_size          bigint,
    checksum_algorithm text,
    checksum           text,
    data_id            text COLLATE "C",
    UNIQUE (title, version, type, device_profile_id)
);
CREATE INDEX ota_packages_by_creation ON ota_packages (created_time, id);
CREATE TABLE ota_chunks (
    data_id text COLLATE "C" NOT NULL,
    idx     integer NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (data_id, idx)
);
ALTER TABLE ota_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE ota_assignments (
    entity_id  text COLLATE "C" NOT NULL,
    type       text NOT NULL,
    package_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (entity_id, type)
);
CREATE INDEX ota_assignments_by_package ON ota_assignments (package_id);
"""

# Rollups (rollups.py): per series, resolution and bucket the count, sums, minima and maxima of its
# points; ``rolled`` the series' watermark (a day start: the rows below it are complete, except on
# its dirty days); a series starts with nothing rolled (its oldest point's day).
_V_ROLLUPS = """
ALTER TABLE series ADD COLUMN rolled bigint;
UPDATE series SET rolled = oldest - mod(oldest, 86400000) - CASE WHEN mod(oldest, 86400000) < 0 THEN 86400000 ELSE 0 END
    WHERE oldest IS NOT NULL AND oldest >= -9223372036828800000;
UPDATE series SET rolled = -9223372036828800000 WHERE oldest < -9223372036828800000;
CREATE INDEX series_by_rolled ON series (rolled) WHERE rolled IS NOT NULL;
CREATE TABLE ts_kv_rollup (
    series bigint NOT NULL,
    res    bigint NOT NULL,
    bucket bigint NOT NULL,
    n bigint NOT NULL, nl bigint NOT NULL, nd bigint NOT NULL,
    sl numeric, sd double precision, minl bigint, maxl bigint, mind double precision, maxd double precision,
    PRIMARY KEY (series, res, bucket)
);
CREATE TABLE ts_kv_dirty (
    series bigint NOT NULL,
    day    bigint NOT NULL,
    PRIMARY KEY (series, day)
);
"""

MIGRATIONS = [_V1, partitions.create_fixed, _V3, _V4, _V_DEVICE_TRANSPORT, _V_OTA, _V_ROLLUPS]
SCHEMA_VERSION = len(MIGRATIONS)


def _lock_key(schema):
    return zlib.crc32(f"tbcoap-migrate:{schema}".encode())


def migrate(conn, schema):
    """Create the schema if missing and run the missing steps, one transaction each."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))  # (a schema made by an
            # administrator is used as it is: the user then needs no right to create schemas)
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        if conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
            conn.execute("INSERT INTO schema_version VALUES (0)")
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
            current = conn.execute("SELECT version FROM schema_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise StoreUnavailable(f"database schema version {current} is newer than this tbcoap "
                                       f"supports ({SCHEMA_VERSION}); upgrade tbcoap")
            if current == SCHEMA_VERSION:
                return
            step = MIGRATIONS[current]
            if callable(step):
                step(conn)
            else:
                conn.execute(step)
            conn.execute("UPDATE schema_version SET version = %s", (current + 1,))


def ensure_default_profile(conn):
    """Give a store without a default profile one: the profile named ``default``, created if missing
    (a store whose default was chosen keeps it)."""
    with conn.transaction():
        if conn.execute("SELECT 1 FROM default_profile").fetchone():
            return
        conn.execute("INSERT INTO device_profiles (id, name, provision_type, created_time)"
                     " VALUES (%s, 'default', 'DISABLED', %s) ON CONFLICT DO NOTHING", (new_id(), now_ms()))
        conn.execute("INSERT INTO default_profile (one, profile_id) SELECT 1, id FROM device_profiles"
                     " WHERE name = 'default' ON CONFLICT DO NOTHING")


def version(conn):
    return conn.execute("SELECT version FROM schema_version").fetchone()[0]
