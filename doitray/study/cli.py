"""Commands of this area (filled in by its implementation)."""


def register(sub):
    return None
