"""YAML read with the line of every key, so each problem can say where it is; a file too
big, too deep or with too many values is refused before it is parsed in full."""

from __future__ import annotations

from typing import Any

import yaml

from pinsyncd.config.problems import ConfigError, Lines, Problem, render_loc

MAX_CONFIG_FILE = 2**20
"""A config is a few KiB; a larger file is refused before it is parsed."""


MAX_DEPTH = 64
"""Nesting deeper than this is refused (a config needs 4 levels)."""


MAX_VALUES = 100_000
"""Values the file may hold once its aliases are expanded (an alias bomb expands to
billions from a few lines)."""


class TooComplex(Exception):
    """The YAML is shaped to exhaust the reader: the message says how."""


def load_yaml(text: str, filename: str) -> tuple[Any, Lines, list[Problem]]:
    """The data, the line of each key, and the keys that appear twice (reported with the
    other problems: the data holds the last value of such a key)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        problem = Problem("", f"the YAML nests deeper than pinsyncd reads ({MAX_DEPTH} levels)")
        raise ConfigError(filename, [problem]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        reason = exc.problem or exc.context or "invalid YAML"
        column = f", column {mark.column + 1}" if mark else ""
        problem = Problem("", f"invalid YAML{column}: {reason}", line)
        raise ConfigError(filename, [problem]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(filename, [Problem("", f"invalid YAML: {exc}")]) from None
    if root is None:
        raise ConfigError(filename, [Problem("", "the file is empty; see config.example.yaml")])
    lines: Lines = {}
    duplicates: list[Problem] = []
    try:
        _index_nodes(root, (), lines, duplicates, _Budget())
    except TooComplex as exc:
        raise ConfigError(filename, [Problem("", str(exc))]) from None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(filename, [Problem("", "the top level must be a mapping of keys", 1)])
    try:
        data = yaml.SafeLoader(text).get_single_data()
    except yaml.YAMLError as exc:  # e.g. a bad tag that composes but does not construct
        raise ConfigError(filename, [Problem("", f"invalid YAML: {exc}")]) from None
    return data, lines, duplicates


class _Budget:
    """What walking the YAML may cost: `MAX_VALUES` values, `MAX_DEPTH` levels, no cycle."""

    def __init__(self) -> None:
        self.values = 0
        self.path: list[int] = []  # ids of the collections being walked

    def enter(self, node: yaml.Node) -> None:
        self.values += 1
        if self.values > MAX_VALUES:
            raise TooComplex(
                f"the YAML holds more than {MAX_VALUES:,} values once its aliases are "
                "expanded (an alias bomb?)"
            )
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if id(node) in self.path:
                raise TooComplex(
                    f"an alias refers to a value that contains it (line {node.start_mark.line + 1})"
                )
            if len(self.path) >= MAX_DEPTH:
                raise TooComplex(f"the YAML nests deeper than {MAX_DEPTH} levels")


def _index_nodes(
    node: yaml.Node,
    loc: tuple[str | int, ...],
    lines: Lines,
    duplicates: list[Problem],
    budget: _Budget,
) -> None:
    budget.enter(node)
    lines.setdefault(loc, node.start_mark.line + 1)
    if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        return
    budget.path.append(id(node))
    try:
        _index_children(node, loc, lines, duplicates, budget)
    finally:
        budget.path.pop()


def _index_children(
    node: yaml.MappingNode | yaml.SequenceNode,
    loc: tuple[str | int, ...],
    lines: Lines,
    duplicates: list[Problem],
    budget: _Budget,
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "<a collection>"
            child = (*loc, key)
            if key in seen:
                duplicates.append(
                    Problem(render_loc(child), "key appears twice", key_node.start_mark.line + 1)
                )
            seen.add(key)
            budget.enter(key_node)
            _index_nodes(value_node, child, lines, duplicates, budget)
            lines[child] = key_node.start_mark.line + 1  # the key's line, not the value's
    else:
        for index, item in enumerate(node.value):
            _index_nodes(item, (*loc, index), lines, duplicates, budget)
