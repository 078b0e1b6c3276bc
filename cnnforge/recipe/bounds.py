"""YAML read with bounds, so a recipe cannot make cnnforge allocate without limit before it is checked.

``yaml.safe_load`` runs no code, but a 500-byte "billion laughs" of nested aliases expands to
billions of values once a recipe is copied, merged or validated, and deep nesting overflows the
stack. Here the document's size is bounded first, then the composed node graph is measured with
every alias expanded (each node is visited once, so measuring is cheap) before any value is built.
Duplicate keys are refused instead of the last one silently winning.
"""
from __future__ import annotations

from typing import Any

import yaml

#: a recipe is a page of text; anything larger is not one
MAX_BYTES = 1 << 20
#: values a document may hold with every alias expanded (a big sweep grid is a few hundred)
MAX_VALUES = 100_000
#: nesting levels of mappings and lists
MAX_DEPTH = 64


class YamlLimitError(yaml.YAMLError):
    """The document is larger, deeper or more aliased than a recipe can be."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise YamlLimitError(f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """The value of a YAML document, after checking its size, its nesting and its expanded size."""
    if len(text) > MAX_BYTES:
        raise YamlLimitError(f"the document is {len(text)} characters; a recipe is at most {MAX_BYTES}")
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YamlLimitError(f"nested too deeply (more than {MAX_DEPTH} levels)") from None
        if node is None:
            return None
        _measure(node, 0, {})
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _measure(node: yaml.Node, depth: int, sizes: dict[int, int | None]) -> int:
    """Values under ``node`` with aliases expanded; raises as soon as a bound is passed."""
    if depth > MAX_DEPTH:
        raise YamlLimitError(f"nested too deeply (more than {MAX_DEPTH} levels)", node.start_mark)
    known = sizes.get(id(node), 0)
    if known is None:
        raise YamlLimitError("an alias refers to a value that contains it", node.start_mark)
    if known:
        return known
    sizes[id(node)] = None  # in progress: meeting it again below is a cycle
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        children = []
    total = 1
    for child in children:
        total += _measure(child, depth + 1, sizes)
        if total > MAX_VALUES:
            raise YamlLimitError(f"expands to more than {MAX_VALUES} values (aliases repeat what they name)",
                                 node.start_mark)
    sizes[id(node)] = total
    return total
