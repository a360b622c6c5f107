"""A bounded, time-expiring map without a timer per entry.

Entries expire ``lifetime`` seconds after insertion, in one-second buckets;
past ``cap`` entries the oldest is evicted first (and counted).  Memory is
a dict slot plus a deque slot per live entry, whatever the history.

With a ``ByteBudget`` (shared by several maps) the values' bytes are capped
too.  Past the budget, the oldest values holding bytes are *shrunk* when the
map has a ``shrink`` function (the key stays, so a duplicate is still known,
only its kept answer is gone) or their entries evicted when it has none; this
map's own first, then the other maps'.  Every step is O(1) per entry.
"""

from collections import deque


class RecentMap:
    """Insertion-ordered map whose entries expire by age and by count (and bytes)."""

    __slots__ = ("lifetime", "cap", "evictions", "shrunk", "_data", "_order", "_marks", "_budget", "_cost",
                 "_shrink", "_heavy")

    def __init__(self, lifetime: float, cap: int, budget=None, cost=None, shrink=None):
        self.lifetime = lifetime
        self.cap = cap
        self.evictions = 0  # entries dropped before their time (count or bytes)
        self.shrunk = 0     # values shrunk for the byte budget
        self._data = {}
        self._order = deque()  # keys, oldest first
        self._marks = deque()  # [expiry_second, count] runs over _order
        self._budget = budget  # a ByteBudget for the values, or None
        self._cost = cost      # value -> bytes it holds
        self._shrink = shrink  # value -> a value holding no bytes, or None
        self._heavy = deque()  # keys whose values held bytes when set, oldest first
        if budget is not None:
            budget.holders.append(self)

    def __len__(self):
        return len(self._data)

    def __contains__(self, key):
        return key in self._data

    def get(self, key, default=None):
        """The live value for ``key`` (expiry is applied by ``expire``)."""
        return self._data.get(key, default)

    def put(self, key, value, now: float):
        """Insert ``key``; a key already present only has its value replaced."""
        data = self._data
        if key in data:
            self.replace(key, value)
            return
        self.expire(now, budget=4)  # a few at a time: no pause when a busy second expires
        data[key] = value
        self._order.append(key)
        expiry = int(now + self.lifetime) + 1
        marks = self._marks
        if marks and marks[-1][0] == expiry:
            marks[-1][1] += 1
        else:
            marks.append([expiry, 1])
        while len(data) > self.cap:
            self._drop_oldest()
            self.evictions += 1
        if self._budget is not None:
            self._charge(key, value)

    def replace(self, key, value):
        """Set the value of a live key; no effect if it has gone."""
        data = self._data
        if key not in data:
            return
        if self._budget is not None:
            self._budget.give(self._cost(data[key]))
            data[key] = value
            self._charge(key, value)
        else:
            data[key] = value

    def _charge(self, key, value):
        size = self._cost(value)
        if not size:
            return
        self._heavy.append(key)
        budget = self._budget
        budget.used += size
        if budget.used > budget.cap:
            budget.make_room(self)

    def shed_one(self) -> bool:
        """Free the bytes of the oldest value holding any; False if none does."""
        heavy, data = self._heavy, self._data
        while heavy:
            key = heavy.popleft()
            value = data.get(key)
            size = self._cost(value) if value is not None else 0
            if not size:
                continue  # gone, or replaced by a value without bytes
            if self._shrink is None:
                self._remove(key)
                self.evictions += 1
            else:
                data[key] = self._shrink(value)
                self._budget.give(size)
                self.shrunk += 1
            return True
        return False

    def _remove(self, key):
        """Early removal for the budget: the key leaves the map now; its order slot is skipped later."""
        value = self._data.pop(key)
        self._budget.give(self._cost(value))

    def expire(self, now: float, budget: int | None = None):
        """Drop entries whose lifetime has passed (at most ``budget`` of them, if given)."""
        marks, order = self._marks, self._order
        while marks and marks[0][0] <= now and budget != 0:
            head = marks[0]
            take = head[1] if budget is None else min(head[1], budget)
            for _ in range(take):
                self._pop(order.popleft())
            head[1] -= take
            if not head[1]:
                marks.popleft()
            if budget is not None:
                budget -= take
        heavy, data = self._heavy, self._data
        while heavy and heavy[0] not in data:  # keep the byte queue no longer than the map
            heavy.popleft()

    def _pop(self, key):
        value = self._data.pop(key, None)
        if self._budget is not None and value is not None:
            self._budget.give(self._cost(value))

    def _drop_oldest(self):
        self._pop(self._order.popleft())
        head = self._marks[0]
        head[1] -= 1
        if not head[1]:
            self._marks.popleft()
