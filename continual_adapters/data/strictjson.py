"""JSON read from files cadapt did not write itself: datasets, bundle headers, archive manifests.

Python's `json` takes the last of two equal keys and accepts NaN and Infinity. Two readers of
one file could then disagree on what it says, and a score of NaN would pass every comparison
check; so every untrusted JSON in cadapt goes through `loads`, which refuses both.
"""

from __future__ import annotations

import json


def _object(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate keys {sorted({key for key in keys if keys.count(key) > 1})[:5]}")
    return dict(pairs)


def _constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes):
    """`json.loads`, strict. Raises ValueError (bad UTF-8 included) or RecursionError (too deep):
    callers turn both into their own typed error, naming the file."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    return json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
