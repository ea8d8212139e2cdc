"""Deterministic YAML: the same objects give the same bytes (key order as built, no timestamps,
block strings for multi-line text), so rendered files can be compared byte for byte."""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):  # the pure-Python dumper: the same output with or without libyaml
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)
_Dumper.ignore_aliases = lambda self, data: True  # type: ignore[method-assign]


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=1_000_000, indent=2)  # never fold a long line (an entrypoint, a command)


def documents(objs: list[Any], header: str = "") -> str:
    """A multi-document YAML file: the header comment, then each object."""
    body = "---\n".join(dump(o) for o in objs)
    return header + body
