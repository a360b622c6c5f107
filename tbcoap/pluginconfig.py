"""Plugin settings: ``--plugin-option NAME.KEY=VALUE`` and the config file's ``[plugins.NAME]`` tables.

Values from the command line are text and converted to the setting's type;
values from the config file must already have it.  Every error names the
plugin, the key and where the value came from.
"""

from __future__ import annotations

BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "1": True,
                 "false": False, "no": False, "off": False, "0": False}
TYPE_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false"}


class SettingError(ValueError):
    """A plugin setting that cannot be used; the message says which and why."""


class Given:
    """A value as given, with where it came from (for error messages)."""

    __slots__ = ("value", "origin", "is_text")

    def __init__(self, value, origin, is_text=False):
        self.value, self.origin, self.is_text = value, origin, is_text  # is_text: from a command line


def parse_option(text: str) -> tuple[str, str, str]:
    """``"webhook.url=http://x"`` -> ``("webhook", "url", "http://x")``."""
    target, equals, value = text.partition("=")
    name, dot, key = target.strip().partition(".")
    if not equals or not dot or not name or not key:
        raise SettingError(f"--plugin-option {text!r}: expected NAME.KEY=VALUE, e.g. webhook.url=http://host/path")
    return name, key.strip(), value


def collect(tables, options) -> dict:
    """``{plugin: {key: Given}}`` from the config file's ``plugins`` table and the options (which win)."""
    given = {}
    if tables is not None and not isinstance(tables, dict):
        raise SettingError("[plugins] in the config file must hold one table per plugin: [plugins.NAME]")
    for name, table in (tables or {}).items():
        if not isinstance(table, dict):
            raise SettingError(f"[plugins.{name}] in the config file must be a table of KEY = value")
        for key, value in table.items():
            given.setdefault(name, {})[key] = Given(value, f"[plugins.{name}] {key}")
    for text in options or ():
        name, key, value = parse_option(text)
        given.setdefault(name, {})[key] = Given(value, f"--plugin-option {name}.{key}", is_text=True)
    return given


def validate(name, declared, given, active) -> dict:
    """The plugin's ``{key: value}``: defaults, then ``given`` converted and checked.

    ``declared`` is the plugin's list of Setting; a required setting with no
    value is an error only when the plugin is ``active``.
    """
    by_key = {setting.key: setting for setting in declared}
    unknown = sorted(set(given) - set(by_key))
    if unknown:
        takes = f"it takes: {', '.join(sorted(by_key))}" if by_key else "it takes no settings"
        raise SettingError(f"{given[unknown[0]].origin}: plugin {name} has no setting {unknown[0]!r} ({takes})")
    config = {}
    for key, setting in by_key.items():
        if key in given:
            config[key] = _convert(setting, given[key], name)
        elif setting.required and active:
            raise SettingError(f"plugin {name} needs the setting {key!r}: give --plugin-option {name}.{key}=VALUE "
                               f"or {key} in the config file's [plugins.{name}] table")
        else:
            config[key] = setting.default
    return config


def _convert(setting, given, name):
    value, kind = given.value, setting.type
    wrong = (f"{given.origin}: plugin {name} expects {TYPE_NAMES.get(kind, kind.__name__)}"
             + ("" if setting.secret else f", got {given.value!r}"))
    try:
        value = _from_text(value, kind) if given.is_text and kind is not str else value
    except ValueError:
        raise SettingError(wrong) from None
    if not _has_type(value, kind):
        raise SettingError(wrong)
    value = float(value) if kind is float else value
    if setting.check is not None:
        try:
            setting.check(value)
        except ValueError as exc:
            raise SettingError(f"{given.origin}: {exc}") from None
    return value


def _from_text(text, kind):
    if kind is bool:
        word = text.strip().lower()
        if word not in BOOLEAN_WORDS:
            raise ValueError(text)
        return BOOLEAN_WORDS[word]
    return kind(text.strip())


def _has_type(value, kind):
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)
