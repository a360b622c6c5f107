"""Small helpers the SQL of the store's parts shares (store.py, telemetry.py); they run in the
writer and reader threads, on the connection they are given."""

from tbcoap.errors import NotFound

CHUNK = 500  # keys per IN (...) list


def one(conn, sql, *params):
    """The first column of the first row ``sql`` finds, or None."""
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def by_keys(conn, sql, params, keys):
    """Rows of ``sql`` (which ends in a WHERE clause), restricted to ``keys`` unless None."""
    if keys is None:
        yield from conn.execute(sql, params)
        return
    for i in range(0, len(keys), CHUNK):
        part = keys[i : i + CHUNK]
        marks = ", ".join("?" * len(part))
        yield from conn.execute(f"{sql} AND key IN ({marks})", (*params, *part))


def require_device(conn, device_id):
    """NotFound unless the device exists."""
    if one(conn, "SELECT 1 FROM devices WHERE id = ?", device_id) is None:
        raise NotFound(f"no device with id {device_id}")
