"""A conversation's messages as a tree: the branch to a message, a message's siblings, the newest leaf below one.

Pure functions of ``(id, parent_id)`` pairs; :class:`~minigate.gateway.storage.conversations.ConversationStore`
runs the queries. A child is always stored after its parent, so ids grow down every branch.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Tree"]


class Tree:
    """The shape of one conversation's messages: who follows whom (roots have no parent)."""

    def __init__(self, links: Iterable[tuple[int, int | None]]) -> None:
        """Build from ``(id, parent_id)`` pairs, in any order."""
        self.parent: dict[int, int | None] = dict(links)
        self.children: dict[int | None, list[int]] = {}
        for node in sorted(self.parent):
            self.children.setdefault(self.parent[node], []).append(node)

    def __contains__(self, node: object) -> bool:
        return node in self.parent

    def path(self, leaf: int) -> list[int]:
        """The ids from the root down to ``leaf``; empty if ``leaf`` is not in the tree."""
        branch: list[int] = []
        node: int | None = leaf if leaf in self.parent else None
        while node is not None and len(branch) <= len(self.parent):  # bounded, even if the links had a loop
            branch.append(node)
            node = self.parent.get(node)
        branch.reverse()
        return branch

    def siblings(self, node: int) -> list[int]:
        """``node`` and the other versions of it (the same parent), oldest first."""
        if node not in self.parent:
            return []
        return list(self.children.get(self.parent[node], [node]))

    def latest_leaf(self, node: int) -> int:
        """The newest message at or below ``node``: the end of the branch written last under it."""
        newest, todo = node, [node]
        while todo:
            current = todo.pop()
            newest = max(newest, current)
            todo.extend(self.children.get(current, []))
        return newest

    def leaf(self, current: int | None) -> int | None:
        """The leaf to show: ``current`` if it is in the tree, else the newest message (None for no messages)."""
        if current is not None and current in self.parent:
            return current
        return max(self.parent, default=None)
