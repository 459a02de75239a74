"""Put a deliberate bug into each key formula of a copy of the project and run the tests that should catch it.

    python scripts/mutation_check.py [NAME ...]      (all mutations by default; about 10 minutes on 2 cores)

Each mutation replaces one exact piece of code; the script reports, per mutation, the first failing test (`pytest -x`
over the listed test files), or SURVIVED when every test passed: a formula no test guards. A mutation whose code is
no longer found is reported as STALE (update it here with the code).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (file, code, replaced by, test files in the order to run them)
MUTATIONS = {
    "v-prediction fake-denoiser weight 1/sigma^2": (
        "dmdlib/denoisers/discrete.py",
        "return (sigma**2 + 1) / sigma**2",
        "return sigma**-2",
        ["tests/test_denoisers.py"],
    ),
    "dm_sigma_max cap disabled": (
        "dmdlib/training/distill.py",
        "if params.dm_sigma_max is not None:",
        "if False:",
        ["tests/test_losses.py"],
    ),
    "DM noise fractions 5%-95% instead of 2%-98%": (
        "dmdlib/training/losses.py",
        "DM_MIN_FRACTION, DM_MAX_FRACTION = 0.02, 0.98",
        "DM_MIN_FRACTION, DM_MAX_FRACTION = 0.05, 0.95",
        ["tests/test_losses.py", "tests/test_params.py"],
    ),
    "DM noise fractions default in params 5%-95%": (
        "dmdlib/params.py",
        "(0.02, 0.98), description",
        "(0.05, 0.95), description",
        ["tests/test_losses.py"],
    ),
    "FID from the means only": (
        "dmdlib/evaluation/metrics.py",
        "return float(frechet_distance(mu, sigma, b.mean(0), np.cov(b, rowvar=False)))",
        "return float(((mu - b.mean(0)) ** 2).sum())",
        ["tests/test_evaluate.py"],
    ),
    "DDPM prior_scale sigma instead of sqrt(sigma^2 + 1)": (
        "dmdlib/denoisers/discrete.py",
        "return (sigma**2 + 1) ** 0.5",
        "return sigma",
        ["tests/test_denoisers.py"],
    ),
    "DM gradient sign flipped": (
        "dmdlib/training/losses.py",
        "(mu_fake - mu_real) * expand(weight, x)",
        "(mu_real - mu_fake) * expand(weight, x)",
        ["tests/test_discrete_teachers.py", "tests/test_toy.py"],
    ),
    "DM normaliser dropped": (
        "dmdlib/training/losses.py",
        "weight = 1.0 / (x_detached - mu_real).abs().flatten(1).mean(1).clamp_min(1e-12)",
        "weight = torch.ones(len(x), device=x.device)",
        ["tests/test_discrete_teachers.py", "tests/test_toy.py", "tests/test_losses.py"],
    ),
    "precision/recall against the first images of the split": (
        "dmdlib/evaluation/measure.py",
        'self.features["classifier"][torch.from_numpy(stratified_subset(self.labels, len(samples)))]',
        'self.features["classifier"][: len(samples)]',
        ["tests/test_evaluate.py"],
    ),
    "floor not subtracted from the floor-subtracted ratio": (
        "dmdlib/evaluation/metrics.py",
        "ratio = lambda keep: (values[keep].mean() - floor) / (baselines[keep].mean() - floor)",
        "ratio = lambda keep: values[keep].mean() / baselines[keep].mean()",
        ["tests/test_evaluate.py"],
    ),
    "evaluations counted per call, not per row (guided teachers)": (
        "dmdlib/evaluation/measure.py",
        "rows.append(len(x))",
        "rows.append(batch_size)",
        ["tests/test_evaluate.py"],
    ),
    "fake updates reuse the generator step's samples": (
        "dmdlib/training/distill.py",
        "            if update > 0:\n                x, cond = _fresh_samples(",
        "            if update < 0:\n                x, cond = _fresh_samples(",
        ["tests/test_dmd2.py"],
    ),
}


def run(name: str, file: str, code: str, replacement: str, tests: list[str]) -> str:
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "project"
        shutil.copytree(
            ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", ".dvc", "data", "models")
        )
        target = copy / file
        text = target.read_text()
        if text.count(code) != 1:
            return f"STALE ({file} holds the code {text.count(code)} times)"
        target.write_text(text.replace(code, replacement))
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=copy,
            capture_output=True,
            text=True,
        )
        failed = re.findall(r"^FAILED (\S+)", result.stdout, flags=re.MULTILINE)
        return (
            f"caught by {failed[0]}"
            if failed
            else ("SURVIVED" if result.returncode == 0 else f"error: {result.stdout[-500:]}")
        )


def main() -> None:
    names = sys.argv[1:] or list(MUTATIONS)
    for name in names:
        print(f"| {name} | {run(name, *MUTATIONS[name])} |", flush=True)


if __name__ == "__main__":
    main()
