"""Every REST call: method, path (ThingsBoard's), handler, roles."""

from tbcoap.rest import admin, customers, devices, ota, profiles, rpc, telemetry
from tbcoap.rest.routing import route

BOTH = ("admin", "customer")

DEVICE = "/api/plugins/telemetry/DEVICE/{device_id}"

ROUTES = [
    route("POST", "/api/device", ota.save_device),  # devices.create_device, with firmwareId and softwareId
    route("POST", "/api/device/credentials", devices.set_credentials),
    route("GET", "/api/device/{device_id}", ota.get_device, BOTH),
    route("DELETE", "/api/device/{device_id}", devices.delete_device),
    route("GET", "/api/device/{device_id}/credentials", devices.get_credentials),
    route("GET", "/api/tenant/devices", devices.tenant_devices),
    route("GET", "/api/tenant/device", devices.tenant_devices),
    route("GET", "/api/tenant/deviceInfos", devices.tenant_device_infos),
    route("GET", DEVICE + "/keys/timeseries", telemetry.timeseries_keys, BOTH),
    route("GET", DEVICE + "/values/timeseries", telemetry.timeseries_values, BOTH),
    route("GET", DEVICE + "/values/timeseries/history", telemetry.timeseries_values, BOTH),
    route("GET", DEVICE + "/keys/attributes", telemetry.attribute_keys, BOTH),
    route("GET", DEVICE + "/keys/attributes/{scope}", telemetry.attribute_keys, BOTH),
    route("GET", DEVICE + "/values/attributes", telemetry.attribute_values, BOTH),
    route("GET", DEVICE + "/values/attributes/{scope}", telemetry.attribute_values, BOTH),
    route("POST", DEVICE + "/timeseries/{scope}", telemetry.save_timeseries),
    route("POST", DEVICE + "/timeseries/{scope}/{ttl}", telemetry.save_timeseries),
    route("DELETE", DEVICE + "/timeseries/delete", telemetry.delete_timeseries),
    route("POST", DEVICE + "/{scope}", telemetry.save_attributes),
    route("POST", DEVICE + "/attributes/{scope}", telemetry.save_attributes),
    route("DELETE", DEVICE + "/{scope}", telemetry.delete_attributes),
    route("POST", "/api/plugins/telemetry/{device_id}/{scope}", telemetry.save_attributes),   # ThingsBoard's older
    route("DELETE", "/api/plugins/telemetry/{device_id}/{scope}", telemetry.delete_attributes),  # spelling
    route("POST", "/api/rpc/oneway/{device_id}", rpc.oneway),
    route("POST", "/api/rpc/twoway/{device_id}", rpc.twoway),
    route("POST", "/api/plugins/rpc/oneway/{device_id}", rpc.oneway),
    route("POST", "/api/plugins/rpc/twoway/{device_id}", rpc.twoway),
    route("GET", "/api/rpc/persistent/{rpc_id}", rpc.get_persistent),
    route("DELETE", "/api/rpc/persistent/{rpc_id}", rpc.delete_persistent),
    route("GET", "/api/rpc/persistent/device/{device_id}", rpc.device_rpcs),
    route("POST", "/api/customer", customers.create_customer),
    route("GET", "/api/customers", customers.list_customers),
    route("GET", "/api/customer/{customer_id}", customers.get_customer, BOTH),
    route("GET", "/api/tenant/customers", customers.tenant_customer),
    route("GET", "/api/auth/user", customers.who, BOTH),
    route("GET", "/api/customer/{customer_id}/devices", customers.customer_devices, BOTH),
    route("GET", "/api/customer/{customer_id}/deviceInfos", customers.customer_device_infos, BOTH),
    route("POST", "/api/customer/device/{device_name}/claim", customers.claim, BOTH),
    route("DELETE", "/api/customer/device/{device_name}/claim", customers.unclaim, BOTH),
    route("DELETE", "/api/customer/{customer_id}", customers.delete_customer),
    route("POST", "/api/customer/{customer_id}/device/{device_id}", customers.assign_device),
    route("DELETE", "/api/customer/device/{device_id}", customers.unassign_device),
    route("POST", "/api/owner/CUSTOMER/{customer_id}/DEVICE/{device_id}", customers.assign_device),
    route("POST", "/api/owner/TENANT/{tenant_id}/DEVICE/{device_id}", customers.owner_to_tenant),
    route("POST", "/api/deviceProfile", ota.save_profile),  # profiles.create_profile, with firmwareId and softwareId
    route("GET", "/api/deviceProfiles", profiles.list_profiles),
    route("GET", "/api/deviceProfile/{profile_id}", ota.get_profile),
    route("DELETE", "/api/deviceProfile/{profile_id}", profiles.delete_profile),
    route("POST", "/api/deviceProfile/{profile_id}/default", profiles.set_default),
    route("POST", "/api/otaPackage", ota.save_info),
    route("POST", "/api/otaPackage/{package_id}", ota.save_data),
    route("GET", "/api/otaPackage/info/{package_id}", ota.get_info),
    route("GET", "/api/otaPackage/{package_id}", ota.get_info),
    route("GET", "/api/otaPackage/{package_id}/download", ota.download),
    route("GET", "/api/otaPackage/{package_id}/devices", ota.package_devices),
    route("DELETE", "/api/otaPackage/{package_id}", ota.delete),
    route("GET", "/api/otaPackages", ota.list_packages),
    route("GET", "/api/otaPackages/{profile_id}/{ota_type}", ota.list_packages),
    route("GET", "/api/admin/stats", admin.stats),
    route("GET", "/api/admin/plugins", admin.plugins),
    route("GET", "/api/admin/backup", admin.backup),
    route("GET", "/api/health", admin.health, roles=()),
    route("GET", "/metrics", admin.metrics, roles=("admin", "metrics")),
]
