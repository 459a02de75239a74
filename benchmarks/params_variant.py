"""Write a copy of params.yaml with `section.key=value` overrides (the dotted names of `dvc exp run -S`).

    python benchmarks/params_variant.py OUT.yaml [section.key=value ...]
"""

from __future__ import annotations

import sys

import yaml


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        raise SystemExit(__doc__)
    out, *overrides = sys.argv[1:]
    params = yaml.safe_load(open("params.yaml"))
    for item in overrides:
        key, value = item.split("=", 1)
        *path, last = key.split(".")
        node = params
        for part in path:
            if part not in node:
                raise SystemExit(f"params_variant: no section '{part}' on the way to '{key}' in params.yaml")
            node = node[part]
        if last not in node:
            raise SystemExit(f"params_variant: '{key}' is not a key of params.yaml")
        node[last] = yaml.safe_load(value)
    with open(out, "w") as file:
        yaml.safe_dump(params, file)


if __name__ == "__main__":
    main()
