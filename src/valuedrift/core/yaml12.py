"""YAML read as DVC writes it: ``dvc exp run -S lr=5.0e-06`` rewrites params.yaml with ruamel (YAML 1.2),
which prints the float as ``5e-06``; PyYAML's YAML 1.1 resolver would read that back as the *string*
"5e-06". :func:`load` resolves floats by the YAML 1.2 rule (a dot is optional before the exponent), so a
params file round-trips through DVC unchanged.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the YAML 1.2 float rule (``1e-5``, ``5E+3`` are numbers)."""


FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
Yaml12Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_12, list("-+0123456789."))


def load(text: str) -> Any:
    """``yaml.safe_load`` with :class:`Yaml12Loader` (what ``safe_load`` does, with this loader)."""
    loader = Yaml12Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
