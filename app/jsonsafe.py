"""JSON from strangers, bounded in depth: a 10,000-level body must be a clear refusal, not a RecursionError."""

from __future__ import annotations

import json
from typing import Any

# Deeper than any body a sender of ours writes (CourseSales events nest 3 levels, Moodle events 4).
MAX_DEPTH = 32


class JSONRefused(ValueError):
    """Not JSON, or JSON nested deeper than we keep; the message says which."""


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    try:
        value = json.loads(data)
    except RecursionError:
        raise JSONRefused(f"nested more than {max_depth} levels deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise JSONRefused(str(exc)) from None
    # Counting brackets is C-fast and never undercounts the depth: only a body with many is walked.
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"{") + raw.count(b"[") > max_depth and too_deep(value, max_depth):
        raise JSONRefused(f"nested more than {max_depth} levels deep")
    return value


def too_deep(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests objects or arrays deeper than ``max_depth`` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
