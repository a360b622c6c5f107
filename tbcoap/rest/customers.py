"""REST calls for customers and device claiming."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import BadRequest, Forbidden, NotFound
from tbcoap.rest.answers import Answer
from tbcoap.rest.devices import device_infos, info_paging
from tbcoap.rest.views import device_json, page_json


def customer_json(customer) -> dict:
    """A customer (without its key)."""
    return {"id": {"entityType": "CUSTOMER", "id": customer.id}, "title": customer.title,
            "createdTime": customer.created_time}


@defer.inlineCallbacks
def create_customer(call):
    """POST /api/customer {"title"}: the customer with its API key (shown only here)."""
    customer, key = yield call.core.customers.create(call.json_object().get("title"))
    return {**customer_json(customer), "apiKey": key}


@defer.inlineCallbacks
def list_customers(call):
    """GET /api/customers?pageSize&page."""
    page_size, page = call.paging()
    customers, total = yield call.core.customers.page(page_size, page)
    return page_json([customer_json(c) for c in customers], total, page_size, page)


@defer.inlineCallbacks
def get_customer(call, customer_id):
    """GET /api/customer/{customerId}: the admin, or that customer itself (others: 404)."""
    call.customer(customer_id)
    customer = yield call.core.customers.get(customer_id)
    return customer_json(customer)


@defer.inlineCallbacks
def tenant_customer(call):
    """GET /api/tenant/customers?customerTitle=TITLE: the customer with that title."""
    title = call.query.get("customerTitle")
    if not title:
        raise BadRequest("query parameter customerTitle is required")
    customer = yield call.core.customers.by_title(title)
    return customer_json(customer)


TENANT_ID = "02e0fcad-2488-59c4-92fe-d8a4fc68c55a"
"""The one tenant of a node (every node of a deployment), as ThingsBoard names a tenant: a fixed id."""
TENANT = {"entityType": "TENANT", "id": TENANT_ID}


def who(call):
    """GET /api/auth/user (any key): who the key is, as ThingsBoard answers it (with the ``email``,
    ``authority`` and ``tenantId`` tb-rest-client's User requires; keys have no e-mail address, so
    ``email`` is a name under the reserved ``.invalid`` domain)."""
    principal = call.principal
    if principal.role == "admin":
        return {"authority": "TENANT_ADMIN", "customerId": None, "name": "admin", "email": "admin@tbcoap.invalid",
                "tenantId": TENANT}
    return call.core.customers.get(principal.customer_id).addCallback(
        lambda customer: {"authority": "CUSTOMER_USER", "name": customer.title, "tenantId": TENANT,
                          "email": f"customer-{customer.id}@tbcoap.invalid",
                          "customerId": {"entityType": "CUSTOMER", "id": customer.id}})


@defer.inlineCallbacks
def delete_customer(call, customer_id):
    """DELETE /api/customer/{customerId}: its devices become free, its key is refused at once."""
    yield call.core.customers.delete(customer_id)


@defer.inlineCallbacks
def assign_device(call, customer_id, device_id):
    """POST /api/customer/{customerId}/device/{deviceId} (and ThingsBoard 4's
    /api/owner/CUSTOMER/{customerId}/DEVICE/{deviceId}): the device now belongs to that customer."""
    device = yield call.core.owners.assign(device_id, customer_id)
    return device_json(device)


@defer.inlineCallbacks
def unassign_device(call, device_id):
    """DELETE /api/customer/device/{deviceId}: the device is free again."""
    device = yield call.core.owners.release(device_id)
    return device_json(device)


@defer.inlineCallbacks
def owner_to_tenant(call, tenant_id, device_id):
    """POST /api/owner/TENANT/{tenantId}/DEVICE/{deviceId} (ThingsBoard 4): the tenant owns the
    device again, that is, it is free."""
    if tenant_id != TENANT_ID:
        raise NotFound(f"tenant {tenant_id} not found")
    device = yield call.core.owners.release(device_id)
    return device_json(device)


@defer.inlineCallbacks
def customer_devices(call, customer_id):
    """GET /api/customer/{customerId}/devices?pageSize&page: the admin, or that customer itself."""
    call.customer(customer_id)
    yield call.core.customers.get(customer_id)
    page_size, page = call.paging()
    devices, total = yield call.core.customers.devices(customer_id, page_size, page, **call.device_query())
    return page_json([device_json(d) for d in devices], total, page_size, page)


@defer.inlineCallbacks
def customer_device_infos(call, customer_id):
    """GET /api/customer/{customerId}/deviceInfos?pageSize&page: a customer's devices with activity."""
    call.customer(customer_id)
    yield call.core.customers.get(customer_id)
    page_size, page = info_paging(call)
    devices, total = yield call.core.customers.devices(customer_id, page_size, page, **call.device_query())
    return page_json((yield device_infos(call, devices)), total, page_size, page)


@defer.inlineCallbacks
def claim(call, device_name):
    """POST /api/customer/device/{deviceName}/claim {"secretKey"}: SUCCESS, FAILURE or CLAIMED."""
    if call.principal.role != "customer":
        raise BadRequest("claiming gives the device to the calling customer: use a customer key")
    secret = call.json_object(optional=True).get("secretKey")
    result, device = yield call.core.claims.claim(call.principal.customer_id, device_name,
                                                  "" if secret is None else secret)
    if result == "SUCCESS":
        return {"device": device_json(device), "response": result}
    return Answer(400, result)  # the bare JSON string "FAILURE" or "CLAIMED", as ThingsBoard answers


@defer.inlineCallbacks
def unclaim(call, device_name):
    """DELETE /api/customer/device/{deviceName}/claim: the device is free again."""
    device = yield call.core.devices.by_name(device_name)
    if not call.principal.may_act_for(device.customer_id):
        raise Forbidden("the device is not claimed" if device.customer_id is None
                        else "the device belongs to another customer")
    device = yield call.core.owners.release(device.id)
    return device_json(device)
