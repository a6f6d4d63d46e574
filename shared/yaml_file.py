"""YAML files of settings, read strictly: a key given twice, or bytes that are not UTF-8, are errors, not surprises."""
from __future__ import annotations

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


def read_yaml(path: Path):
    """The file's YAML document (None when it is empty); a ValueError whose message completes "config file PATH"
    in one line when the file is no readable YAML."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as err:
        raise ValueError(f"is not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise ValueError(f"is not valid YAML{line}: {getattr(err, 'problem', err)}") from None
