"""How the Redis store keeps its records: typed values as one letter of kind and their text
(``L42``, ``D21.5``, ``Sx``, ``B1``, ``J{..}``), points as ``ts|value``, and the models built
from what the scripts return; the scripts' refusal codes as tbcoap errors."""

from tbcoap.errors import BadRequest, DuplicateName, DuplicateToken, NotFound
from tbcoap.models import Customer, Device, DeviceProfile, Rpc, from_kind

KIND_CODES = {"BOOLEAN": "B", "LONG": "L", "DOUBLE": "D", "STRING": "S", "JSON": "J"}
KINDS = {code: kind for kind, code in KIND_CODES.items()}
REFUSALS = {
    "DUPNAME": lambda what: DuplicateName(f"a {what} with this name exists"),
    "DUPTOKEN": lambda what: DuplicateToken("these credentials are used by another device"),
    "DUPID": lambda what: BadRequest(f"a {what} with this id exists"),
    "DUPKEY": lambda what: BadRequest(f"this key is used by another {what}"),
    "NOTFOUND": lambda what: NotFound("no such device"),
    "NOCUSTOMER": lambda what: NotFound("no such customer"),
}


def encode(kind, data):
    """``kind`` and plain data (from storekit) as the stored text."""
    if kind == "DOUBLE":
        return "D" + repr(float(data))
    return KIND_CODES[kind] + str(data)


def decode(text):
    """A typed value from its stored text."""
    return from_kind(KINDS[text[0]], text[1:])


def as_point(member):
    """``(ts, value)`` of a ``ts|value`` member."""
    ts, _, text = member.partition("|")
    return int(ts), decode(text)


def as_device(row):
    """A Device from the fields the scripts return (id, name, type, label, created, customer, info, transport)."""
    return Device(id=row[0], name=row[1], type=row[2], label=row[3], created_time=int(row[4]), customer_id=row[5],
                  additional_info=row[6], transport_configuration=row[7] if len(row) > 7 else None)


def as_profile(row):
    """A DeviceProfile from the fields the scripts return (id, name, type, key, secret, created, transport)."""
    return DeviceProfile(id=row[0], name=row[1], provision_type=row[2], provision_key=row[3],
                         provision_secret=row[4], created_time=int(row[5]), transport_configuration=row[6])


def as_customer(row):
    return Customer(id=row[0], title=row[1], created_time=int(row[2]))


def as_rpc(row):
    (id_, device, request, method, params, oneway, persistent, expires, created, status, response) = row
    return Rpc(id=id_, device_id=device, request_id=int(request), method=method, params_json=params,
               oneway=oneway == "1", persistent=persistent == "1", expiration_time=int(expires),
               created_time=int(created), status=status, response_json=response)


def pairs(flat):
    """``{key: value}`` of a flat ``[key, value, ...]`` reply."""
    return dict(zip(flat[::2], flat[1::2]))


def fold(name):
    """A name as searches compare it (``textSearch`` ignores case)."""
    return name.casefold()
