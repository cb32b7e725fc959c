"""A policy hook module that cannot be imported (for the start-up error's test)."""

BROKEN = 1 // 0


def hook(call: object) -> None:  # pragma: no cover - never imported
    return None
