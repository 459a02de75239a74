"""`export`: a distilled generator as a model folder other tools load, with a model card.

Diffusers families (diffusers DDPM, SD v1.5, SDXL, SD3, FLUX, DiT): a stock pipeline folder, the teacher's with
the generator's network and a one-step scheduler, for `DiffusionPipeline.from_pretrained`. k-diffusion, EDM and
EDM2 generators: the generator folder, for `dmdlib.generators.generator.load_generator`. The card (README.md) states
the teacher and its digest, the commit, the distill params and the metrics of `evaluate`.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import typer
import yaml

from dmd.stages.common import PARAMS_OPTION, setup_logging, user_errors
from dmdlib.errors import ParamsError
from dmdlib.export import export_generator
from dmdlib.generators.generator import GENERATOR_FILE, generator_reference
from dmdlib.params import load_params

log = logging.getLogger("export")
app = typer.Typer(add_completion=False, help=__doc__)
CARD_METRICS = (  # eval.json keys of the distilled generator's row that the card quotes
    "fid_classifier",
    "fid_classifier_above_floor_vs_teacher",
    "fid_inception",
    "fid_inception_vs_teacher",
    "precision_classifier",
    "recall_classifier",
    "clip_score",
    "images_per_s",
    "nfe",
)


@app.command()
def main(
    generator: Path = typer.Option(Path("models/generator"), help="Generator folder from the `distill` stage."),
    out: Path = typer.Option(..., help="New folder for the exported model (an existing non-empty one is refused)."),
    params: Path = PARAMS_OPTION,
    metrics: Path = typer.Option(
        Path("metrics/eval.json"), help="`evaluate`'s metrics for the card (left out, saying so, when absent)."
    ),
) -> None:
    """Write the generator as a stock diffusers pipeline (or a dmdlib generator folder) with a model card."""
    setup_logging()
    with user_errors():
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ParamsError(f"--out {out}: exists and is not an empty folder; give a new one (nothing is deleted)")
        distill = load_params(params, "distill").distill.model_dump(mode="json")
        how = export_generator(generator, out, lambda how: _card(generator, distill, metrics, how))
        log.info("wrote %s; load it with: %s", out, how)


def _card(generator: Path, distill: dict, metrics: Path, how: str) -> str:
    """The model card: what the generator is, where it came from, how it measured and how it loads."""
    reference = generator_reference(generator)
    description = json.loads((generator / GENERATOR_FILE).read_text())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    lines = [
        "# A distilled generator (dmd: Distribution Matching Distillation)",
        "",
        f"- steps: {len(description['sigmas'])} (noise levels {description['sigmas']})",
        f"- teacher: `{reference.kind}` from `{reference.path or 'the embedded default'}`, digest "
        f"`{description.get('teacher_digest') or 'not recorded'}`",
        f"- made at commit `{commit.stdout.strip() if commit.returncode == 0 else 'unknown (not a git checkout)'}`",
        f"- objective: `{distill['objective']}`",
        "",
        "## Load",
        "",
        "```python",
        how,
        "```",
        "",
        "## Metrics (`evaluate`)",
        "",
    ]
    if metrics.is_file():
        results = json.loads(metrics.read_text())
        row = results.get("dmd_one_step", {})
        lines += [f"{results.get('samples')} samples x {results.get('sample_sets')} sets, from `{metrics}`:", ""]
        lines += [f"- {key}: {row[key]}" for key in CARD_METRICS if key in row]
    else:
        lines.append(f"none: {metrics} was not found (run `evaluate` first)")
    lines += ["", "## Distill params", "", "```yaml", yaml.safe_dump(distill, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    app()
