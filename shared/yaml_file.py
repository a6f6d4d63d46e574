"""YAML files of settings, read strictly: a key given twice, or bytes that are not UTF-8, are errors, not surprises;
a run's JSON records, whose damage (an edit, a copy cut short) is named in one line; and the writing of a run's
records in one step."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a mapping that gives a key twice is refused (PyYAML keeps the last one silently,
    so ``z_dim: 3`` above ``z_dim: 4`` trained z=4 without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = []
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{key} given twice", key_node.start_mark)
            seen.append(key)
        return super().construct_mapping(node, deep)


class _FlagTextLoader(_UniqueKeyLoader):
    """Plain scalars stay text for a flag's type to read, as it reads them on the command line; only null and
    true/false (YAML 1.2's spellings) are resolved. PyYAML's YAML 1.1 rules read ``010`` as 8, ``0x1F`` as 31,
    ``1:05`` as 65 and ``yes`` as true, which the same text after a flag is not."""

    yaml_implicit_resolvers: dict = {}


_FlagTextLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                      list("tTfF"))
_FlagTextLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"),
                                      ["~", "n", "N", ""])


def read_yaml(path: Path, flag_text: bool = False):
    """The file's YAML document (None when it is empty); with ``flag_text``, its plain scalars as text but null and
    true/false (:class:`_FlagTextLoader`). A ValueError whose message completes "config file PATH" in one line when
    the file is no readable YAML."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_FlagTextLoader if flag_text else _UniqueKeyLoader)
    except UnicodeDecodeError as err:
        raise ValueError(f"is not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise ValueError(f"is not valid YAML{line}: {getattr(err, 'problem', err)}") from None


def read_yaml_mapping(path: Path, flag_text: bool = False) -> dict:
    """The file's YAML mapping of settings (``flag_text``: see :func:`read_yaml`); a ValueError completing "config
    file PATH" otherwise (an empty file too: it was cut short or is the wrong one)."""
    settings = read_yaml(path, flag_text)
    if settings is None or settings == {}:
        raise ValueError("holds no settings: pass the file that does")
    if not isinstance(settings, dict):
        raise ValueError("must hold a mapping of flag names to values")
    return settings


def read_json_record(path: Path) -> dict:
    """A run's JSON record (metrics.json, timing.json); a ValueError naming the file and the problem in one line
    when it holds no JSON object."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds no JSON object")
    return record


def write_whole(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` in one step, through a file beside it renamed over it: a kill mid-write leaves the
    file as it was (a resumed run's config.yaml: its last call's settings), never cut short, which would read as a
    shorter mapping of settings whose missing ones fall back to their defaults."""
    part = path.with_name(f".{path.name}.part")
    try:
        part.write_text(text, encoding="utf-8")
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
