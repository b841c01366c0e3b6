"""YAML loading that reads ``1e9`` and ``2.5e-3`` as numbers.

PyYAML follows YAML 1.1, where ``1e9`` (no dot, no exponent sign) is a string. Scientists
write exponents that way, so carcell's loader adds the YAML 1.2 float pattern.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


# libyaml's parser where PyYAML was built with it (the PyPI wheels are): about ten times faster
# than the pure-Python one, which matters because every command reads the whole knowledge tree
_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):
    pass


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml_text(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: str | Path) -> Any:
    with open(path) as fh:
        return yaml.load(fh, Loader=_Loader)


def parse_scalar(text: str) -> Any:
    """Parse a ``--set`` value the way it would be read in a YAML file."""
    return yaml.load(text, Loader=_Loader)
