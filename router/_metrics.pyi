"""Type stub of the compiled module ``router._metrics`` (ext/router/_metrics.pyx)."""

class Histogram:
    bounds: tuple[float, ...]
    total: float
    n: int
    def __init__(self, bounds: tuple[float, ...]) -> None: ...
    def observe(self, value: float) -> None: ...
    @property
    def counts(self) -> list[int]: ...
