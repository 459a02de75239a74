"""Start-up time of the `dmd` command: `dmd --help` and each command's `--help`, wall clock, each in a fresh process.

usage: python benchmarks/startup.py [REPEATS]   (default 5; run it on an idle machine: it measures the CPU)

Prints a table of the median and slowest of REPEATS runs per command, and what `import torch` alone takes (the floor
of every command but `dmd --help`). The target (#41): every row under 2 s on the project's 2-core machines.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dmd.cli import COMMANDS

TARGET_S = 2.0


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main(repeats: int = 5) -> None:
    dmd = shutil.which("dmd", path=str(Path(sys.executable).parent)) or "dmd"
    rows = [("python -c 'import torch'", [sys.executable, "-c", "import torch"]), ("dmd --help", [dmd, "--help"])]
    rows += [(f"dmd {name} --help", [dmd, name, "--help"]) for name in COMMANDS]
    print(f"{'command':<28} {'median s':>9} {'slowest s':>10}  under {TARGET_S:.0f} s")
    for label, command in rows:
        times = [wall(command) for _ in range(repeats)]
        slowest = max(times)
        print(f"{label:<28} {statistics.median(times):>9.2f} {slowest:>10.2f}  {'yes' if slowest < TARGET_S else 'NO'}")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:2]))
