"""A bounded, time-expiring map without a timer per entry.

Entries expire ``lifetime`` seconds after insertion, in one-second buckets;
past ``cap`` entries the oldest is evicted first (and counted).  Memory is
a dict slot plus a deque slot per live entry, whatever the history.  With a
``ByteBudget`` (shared by several maps) the values' bytes are capped too:
past it the oldest entries go first, this map's own, then the other maps'.
There is no early removal: a key lives until it expires or is evicted.
"""

from collections import deque


class RecentMap:
    """Insertion-ordered map whose entries expire by age and by count."""

    __slots__ = ("lifetime", "cap", "evictions", "_data", "_order", "_marks", "_budget", "_cost")

    def __init__(self, lifetime: float, cap: int, budget=None, cost=None):
        self.lifetime = lifetime
        self.cap = cap
        self.evictions = 0
        self._data = {}
        self._order = deque()  # keys, oldest first
        self._marks = deque()  # [expiry_second, count] runs over _order
        self._budget = budget  # a ByteBudget for the values, or None
        self._cost = cost      # value -> bytes it holds
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
        if self._budget is not None:
            self._charge(self._cost(value))
        self._order.append(key)
        expiry = int(now + self.lifetime) + 1
        marks = self._marks
        if marks and marks[-1][0] == expiry:
            marks[-1][1] += 1
        else:
            marks.append([expiry, 1])
        if len(data) > self.cap:
            self._drop_oldest()
            self.evictions += 1

    def replace(self, key, value):
        """Set the value of a live key; no effect if it has gone."""
        data = self._data
        if key in data:
            if self._budget is not None:
                self._budget.give(self._cost(data[key]))
                data[key] = value
                self._charge(self._cost(value))
            else:
                data[key] = value

    def _charge(self, size):
        budget = self._budget
        budget.used += size
        if budget.used > budget.cap:
            for holder in [self] + [h for h in budget.holders if h is not self]:
                while budget.used > budget.cap and holder._data:
                    holder._drop_oldest()
                    holder.evictions += 1
                    budget.refusals += 1

    def _pop(self, key):
        value = self._data.pop(key, None)
        if self._budget is not None and value is not None:
            self._budget.give(self._cost(value))

    def expire(self, now: float, budget: int | None = None):
        """Drop entries whose lifetime has passed (at most ``budget`` of them, if given)."""
        marks, data, order = self._marks, self._data, self._order
        while marks and marks[0][0] <= now and budget != 0:
            head = marks[0]
            take = head[1] if budget is None else min(head[1], budget)
            if self._budget is None:
                for _ in range(take):
                    data.pop(order.popleft(), None)
            else:
                for _ in range(take):
                    self._pop(order.popleft())
            head[1] -= take
            if not head[1]:
                marks.popleft()
            if budget is not None:
                budget -= take

    def _drop_oldest(self):
        self._pop(self._order.popleft())
        head = self._marks[0]
        head[1] -= 1
        if not head[1]:
            self._marks.popleft()
