"""The CoAPS port's message layer: exchanges are per DTLS session (RFC 7252 §9.1), so when a
session ends, the Message IDs its peer used are forgotten and the next session from the same
address starts afresh (a device that restarts numbering from the same MID is not answered from
the duplicate cache of its previous life)."""

from __future__ import annotations

from tbcoap.coap.messagelayer import MAX_HOSTS, MessageLayer


class SessionLayer(MessageLayer):
    """A ``MessageLayer`` whose duplicate detection is keyed by session: an id per peer address,
    dropped (O(1)) when the session at that address ends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._session_ids = {}
        self._next_session_id = 1

    def _exchange_key(self, remote, mid):
        session_id = self._session_ids.get(remote)
        if session_id is None:
            if len(self._session_ids) >= MAX_HOSTS:
                self._session_ids.clear()  # ids are never reused: old keys cannot match new sessions
            session_id = self._session_ids[(remote[0], remote[1])] = self._next_session_id
            self._next_session_id += 1
        return (session_id << 16) | mid

    def end_peer(self, remote, reason):
        super().end_peer(remote, reason)
        self._session_ids.pop((remote[0], remote[1]), None)
