"""A cap on bytes held by several holders together (cached answers, waiting notifications)."""


class ByteBudget:
    """A byte count shared by many holders, with a cap; refusals (and evictions) are counted."""

    __slots__ = ("cap", "used", "refusals", "holders")

    def __init__(self, cap: int):
        self.cap, self.used, self.refusals = cap, 0, 0
        self.holders = []  # caches that make room in it by evicting (RecentMap: ``shed_one()``)

    def take(self, size: int) -> bool:
        """Charge ``size`` bytes if they fit under the cap; False (and counted) if not."""
        if self.used + size > self.cap:
            self.refusals += 1
            return False
        self.used += size
        return True

    def give(self, size: int):
        """Return bytes taken earlier."""
        self.used -= size

    def make_room(self, first):
        """Past the cap: holders free the bytes of their oldest values, ``first`` first, until
        the budget is under it again; each value freed is counted as a refusal."""
        for holder in [first] + [h for h in self.holders if h is not first]:
            while self.used > self.cap and holder.shed_one():
                self.refusals += 1
