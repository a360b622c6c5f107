"""Power saving settings in ThingsBoard's shape (PSM, DRX, E_DRX), on profiles and devices.

A profile carries them in ``profileData.transportConfiguration.clientSettings``::

    {"powerMode": "PSM", "psmActivityTimer": 10000, "edrxCycle": 81000, "pagingTransmissionWindow": 10000}

and a device may override them in ``deviceData.transportConfiguration``::

    {"type": "COAP", "powerMode": "E_DRX", "edrxCycle": 81000, "pagingTransmissionWindow": 10000}

(``{"type": "DEFAULT"}``: the profile's settings).  The device's ``powerMode`` wins over the
profile's, and each timer is the device's, else the profile's, else 10,000 ms.  ``PowerSettings``
is what the downlink rules and the activity check read: a window (ms after an uplink in which
downlinks may go, None for DRX or no mode: any time) and a cycle (how much longer the device may
sleep than an awake device before it counts as inactive).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tbcoap.errors import BadRequest
from tbcoap.models import compact_json

PSM, DRX, E_DRX = "PSM", "DRX", "E_DRX"
POWER_MODES = (PSM, DRX, E_DRX)
DEFAULT_TIMER_MS = 10_000
MAX_TIMER_MS = 7 * 24 * 3600 * 1000  # a week: far beyond any PSM or eDRX timer a network grants
TIMERS = ("psmActivityTimer", "edrxCycle", "pagingTransmissionWindow")
MAX_DEVICE_CONFIGURATION = 4096  # characters of a device's transport configuration, as stored


@dataclass(frozen=True, slots=True)
class PowerSettings:
    """A device's effective power-saving settings."""

    mode: str | None = None
    psm_activity_timer: int = DEFAULT_TIMER_MS
    edrx_cycle: int = DEFAULT_TIMER_MS
    paging_window: int = DEFAULT_TIMER_MS

    @property
    def window_ms(self):
        """How long after an uplink downlinks may go (None: at any time)."""
        if self.mode == PSM:
            return self.psm_activity_timer
        if self.mode == E_DRX:
            return self.paging_window
        return None

    @property
    def cycle_ms(self) -> int:
        """What a sleeping device adds to its inactivity timeout: the eDRX cycle, or a PSM device's
        activity timer (it is reachable that long after its last uplink); 0 for DRX or no mode."""
        if self.mode == PSM:
            return self.psm_activity_timer
        if self.mode == E_DRX:
            return self.edrx_cycle
        return 0

    def as_json(self) -> dict:
        """ThingsBoard's fields, as the console and CLI show them (no mode: ``powerMode`` null)."""
        return {"powerMode": self.mode, "psmActivityTimer": self.psm_activity_timer, "edrxCycle": self.edrx_cycle,
                "pagingTransmissionWindow": self.paging_window}


AWAKE = PowerSettings()


def check_fields(settings: dict, where: str) -> None:
    """BadRequest unless ``powerMode`` and the timers of ``settings`` are absent, null or valid."""
    mode = settings.get("powerMode")
    if mode is not None and mode not in POWER_MODES:
        raise BadRequest(f"{where}.powerMode must be PSM, DRX or E_DRX (got {repr(mode)[:40]})")
    for name in TIMERS:
        value = settings.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TIMER_MS:
            raise BadRequest(f"{where}.{name} must be a whole number of milliseconds from 1 to {MAX_TIMER_MS}")


def device_configuration(data):
    """The compact JSON text to store for a device body's ``deviceData`` (None: no transport
    configuration of its own, ThingsBoard's DEFAULT); BadRequest for a bad one."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise BadRequest("deviceData must be a JSON object")
    given = data.get("transportConfiguration")
    if given is None:
        return None
    if not isinstance(given, dict):
        raise BadRequest("deviceData.transportConfiguration must be a JSON object")
    kind = given.get("type", "COAP")
    if kind == "DEFAULT":
        return None
    if kind != "COAP":
        raise BadRequest("deviceData.transportConfiguration type must be DEFAULT or COAP: tbcoap serves CoAP")
    check_fields(given, "deviceData.transportConfiguration")
    text = compact_json({"type": "COAP", **{k: v for k, v in given.items() if k != "type"}})
    if len(text) > MAX_DEVICE_CONFIGURATION:
        raise BadRequest(f"deviceData.transportConfiguration is over {MAX_DEVICE_CONFIGURATION} characters of JSON")
    return text


def device_data_json(text) -> dict:
    """ThingsBoard's ``deviceData`` of a device whose stored transport configuration is ``text``."""
    return {"configuration": {"type": "DEFAULT"},
            "transportConfiguration": json.loads(text) if text else {"type": "DEFAULT"}}


def client_settings(configuration: dict | None) -> dict:
    """A profile's ``clientSettings`` (``{}`` when it has none) from its transport configuration."""
    settings = (configuration or {}).get("clientSettings")
    return settings if isinstance(settings, dict) else {}


def effective(device_text, profile_settings: dict | None) -> PowerSettings:
    """The PowerSettings of a device with stored transport configuration ``device_text`` whose
    profile's ``clientSettings`` are ``profile_settings``."""
    own = json.loads(device_text) if device_text else {}
    profile = profile_settings or {}
    mode = own.get("powerMode") or profile.get("powerMode")
    if mode is None:
        return AWAKE
    timers = [own.get(name) or profile.get(name) or DEFAULT_TIMER_MS for name in TIMERS]
    return PowerSettings(mode, *timers)
