"""The aggregation tree: which inputs each node of each level merges (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Node:
    level: int
    index: int
    children: tuple[int, ...]  # indices into the level below (level 0: the task results)


def plan_tree(leaves: int, fan_in: int) -> list[list[Node]]:
    """Levels 1..L of a tree with fan-in ``fan_in`` over ``leaves`` inputs; the last level
    has exactly one node (the root). Zero leaves give one root with no children."""
    if fan_in < 2:
        raise ValueError("fan_in must be at least 2")
    levels: list[list[Node]] = []
    width, level = leaves, 1
    while True:
        nodes = [
            Node(level, i, tuple(range(start, min(start + fan_in, width))))
            for i, start in enumerate(range(0, max(width, 1), fan_in))
        ]
        levels.append(nodes)
        if len(nodes) == 1:
            return levels
        width, level = len(nodes), level + 1
