"""What a node is made of, chosen once from its settings: the store (built, not yet opened), the
rules and the DTLS context.

``tbcoap.service.Options`` chooses for twistd and ``service_from_args`` (a bad choice is a usage
error there); a node that an embedding application builds from a settings dict chooses in its
constructor (``tbcoap.node.NodeError``).  Nothing is checked twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


class ChoiceError(ValueError):
    """A setting that names something this installation cannot use; the message says which."""


@dataclass(frozen=True)
class Choices:
    """The store backend and its unopened store, the ``--rules`` names in order, the DTLS context
    (None without ``--dtls-cert``)."""

    backend: object
    store: object
    rules: tuple
    dtls_context: object = None


def choose(settings, plugins, configure=None) -> Choices:
    """The Choices for ``settings``; ChoiceError naming the option when one cannot be used.

    ``configure(scheme, rules)``, if given, runs before the store is built (``Options`` validates
    the plugins' settings there: a store's factory reads its own from ``settings["plugins"]``)."""
    backend = store_backend(settings["store"], plugins)
    rules = rule_names(settings["rules"], plugins)
    if configure is not None:
        configure(backend.scheme, rules)
    try:
        store = backend.factory(settings["store"], settings)
    except ValueError as exc:
        raise ChoiceError(f"--store: {exc}") from None
    if settings.get("workers", 1) > 1 and store.bus() is None:
        raise ChoiceError(f"--workers needs a store several nodes can share (redis://... or postgresql://...); "
                          f"the {store.name} store is one node's")
    return Choices(backend, store, tuple(rules), dtls_context(settings))


def store_backend(url, plugins):
    """The StoreBackend offered for the scheme of ``url``."""
    scheme = urlsplit(url).scheme
    backends = plugins.store_backends()
    if scheme not in backends:
        known = ", ".join(sorted(backends)) or "none installed"
        raise ChoiceError(f"--store: unknown store scheme {scheme!r} (available: {known})")
    return backends[scheme]


def rule_names(spec, plugins) -> list:
    """The names of ``--rules`` (``NAME[,NAME]``; ``none``: no rule) in order."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if names == ["none"]:
        return []
    known = plugins.rule_plugins()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ChoiceError(f"--rules: unknown rule {', '.join(unknown) or '(empty)'} "
                          f"(available: {', '.join(known) or 'none installed'}; or none)")
    return names


def dtls_context(settings):
    """The CoAPS server context of ``--dtls-cert``/``--dtls-key``/``--dtls-ca``, or None."""
    cert, key, ca = settings.get("dtls-cert"), settings.get("dtls-key"), settings.get("dtls-ca")
    if bool(cert) != bool(key):
        raise ChoiceError("--dtls-cert and --dtls-key go together (the certificate and its private key)")
    if ca and not cert:
        raise ChoiceError("--dtls-ca needs --dtls-cert and --dtls-key")
    if not cert:
        return None
    from tbcoap.coap.dtls import server_context

    try:
        return server_context(cert, key, ca)
    except ValueError as exc:
        raise ChoiceError(str(exc)) from None
