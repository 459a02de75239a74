#!/usr/bin/env bash
# Download, into .whl/ of the project root (git-ignored), the wheels that a GPU machine with Python 3.12, torch 2.11
# and numpy 2 but no network lacks for the project: the list in wheels.txt beside this file (checked on 2026-12-04 by
# tracing every module a local run imports). Run from the project root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p .whl/opt
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
grep -v '^scipy' "$here/wheels.txt" | sed 's/ *#.*//' | grep . | while read -r spec; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d .whl "$spec"
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d .whl/opt scipy==1.17.1
du -sh .whl
