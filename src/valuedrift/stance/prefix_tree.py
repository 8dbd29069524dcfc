"""Prefix trees of token sequences, packed into one row for a single forward pass ("tree attention").

Scoring a probe's three stance statements needs the same prompt three times, and statements often open
with the same words ("I think …", "I believe …"). A token trie stores every shared prefix once. Packed as
one row, node i attends to itself and its ancestors only, and sits at position ``offset + depth(i)``, so
each node's hidden state is exactly the one it would have at the end of its own sequence:

    mask[i, j] = 1  ⇔  j ∈ ancestors(i) ∪ {i}           position(i) = offset + depth(i)

Nodes are stored in insertion order, which is topological (a parent precedes its children).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PackedTree:
    """A trie of token sequences: ``tokens[i]`` with ``parents[i]`` (-1 for a root) and ``depths[i]``.

    ``paths[k]`` lists the node of every position of sequence k, so ``paths[k][t]`` holds the hidden state
    of sequence k after its token t.
    """

    tokens: tuple[int, ...]
    parents: tuple[int, ...]
    depths: tuple[int, ...]
    paths: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.tokens)

    def ancestor_mask(self) -> np.ndarray:
        """(n, n) bool: ``mask[i, j]`` ⇔ node j is node i or one of its ancestors."""
        n = len(self.tokens)
        mask = np.zeros((n, n), dtype=bool)
        for i, parent in enumerate(self.parents):
            if parent >= 0:
                mask[i] = mask[parent]
            mask[i, i] = True
        return mask


def pack_prefix_tree(sequences: Sequence[Sequence[int]]) -> PackedTree:
    """Merge ``sequences`` into a trie; identical prefixes become one path of nodes."""
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    children: dict[tuple[int, int], int] = {}
    paths = []
    for seq in sequences:
        node, path = -1, []
        for depth, tok in enumerate(seq):
            key = (node, int(tok))
            child = children.get(key)
            if child is None:
                child = len(tokens)
                children[key] = child
                tokens.append(int(tok))
                parents.append(node)
                depths.append(depth)
            path.append(child)
            node = child
        paths.append(tuple(path))
    return PackedTree(tuple(tokens), tuple(parents), tuple(depths), tuple(paths))
