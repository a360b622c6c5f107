"""Rate-limit specifications in ThingsBoard's form ``N:S[,N:S]``."""


def parse_rate_limit(spec: str) -> list[tuple[int, int]]:
    """``"100:1,3000:60"`` -> ``[(100, 1), (3000, 60)]``: at most N requests in S seconds."""
    limits = []
    for part in spec.split(","):
        count, sep, seconds = part.strip().partition(":")
        if not sep or not count.isdigit() or not seconds.isdigit() or int(count) < 1 or int(seconds) < 1:
            raise ValueError(f"expected N:S[,N:S] with positive integers, got {spec!r}")
        limits.append((int(count), int(seconds)))
    return limits
