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
    "Wan timestep not cast as UniPC casts it": (
        "dmdlib/denoisers/video_transformers.py",
        "return (t.double() * train_timesteps).long()",
        "return t * train_timesteps",
        ["tests/test_diffusers_families.py::test_video_family_distils_and_exports"],
    ),
    "Wan prompt states kept past the prompt's tokens": (
        "dmdlib/teachers/families/wan.py",
        "return hidden * inputs.attention_mask[..., None], None",
        "return hidden, None",
        ["tests/test_diffusers_families.py::test_video_family_distils_and_exports"],
    ),
    "CogVideoX decoded with channels and frames swapped back": (
        "dmdlib/teachers/families/cogvideox.py",
        "latents.transpose(1, 2) / vae.config.scaling_factor",
        "latents / vae.config.scaling_factor",
        ["tests/test_diffusers_families.py::test_video_family_distils_and_exports"],
    ),
    "LTX-Video shift of another token count": (
        "dmdlib/teachers/families/ltx.py",
        "shift = flow_shift(config, frames * side * side)",
        "shift = flow_shift(config, side * side)",
        ["tests/test_diffusers_families.py::test_video_flow_teachers_shift_their_times_as_their_pipelines_do"],
    ),
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
        "return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root).real)",
        "return float(diff @ diff)",
        ["tests/test_evaluate.py"],
    ),
    "Heun without its correction (Euler steps)": (
        "dmdlib/denoisers/sampling.py",
        "        if sigma_next > 0:  # Heun's correction",
        "        if False:  # Heun's correction",
        ["tests/test_karras_unet.py"],
    ),
    "image_v1 AdaGN scale without its + 1": (
        "dmdlib/networks/karras_unet.py",
        "F.group_norm(x, self.groups, eps=1e-5), scale + 1)",
        "F.group_norm(x, self.groups, eps=1e-5), scale)",
        ["tests/test_karras_unet.py"],
    ),
    "Karras preconditioner c_in without sigma_data": (
        "dmdlib/denoisers/karras.py",
        "c_in = 1 / (s**2 + self.sigma_data**2) ** 0.5",
        "c_in = 1 / (s**2 + 1) ** 0.5",
        ["tests/test_karras_unet.py"],
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
        "if update == 0 else _fresh_samples(run, params, batch, rng)",
        "if True else _fresh_samples(run, params, batch, rng)",
        ["tests/test_dmd2.py"],
    ),
    "micro-batches clear each other's gradients": (
        "dmdlib/training/dmd.py",
        "        (loss * share if share != 1.0 else loss).backward()",
        "        self.optimizer.zero_grad()\n        (loss * share if share != 1.0 else loss).backward()",
        ["tests/test_distill.py"],
    ),
    "every micro-batch draws the same part of the batch": (
        "dmdlib/training/distill.py",
        "processes.rank * rounds + micro, processes.world_size * rounds",
        "processes.rank * rounds, processes.world_size * rounds",
        ["tests/test_distill.py"],
    ),
    "precision/recall blocks skip a row": (
        "dmdlib/evaluation/metrics.py",
        "yield torch.cdist(points[start : start + rows], against)",
        "yield torch.cdist(points[start + 1 : start + rows + 1], against)",
        ["tests/test_evaluate.py"],
    ),
    "LPIPS fed [0, 1] instead of [-1, 1]": (
        "dmdlib/training/regression.py",
        "x, y = _for_lpips(x), _for_lpips(y)",
        "x, y = _for_lpips((x + 1) / 2), _for_lpips((y + 1) / 2)",
        ["tests/test_losses.py"],
    ),
    "floor not passed into the net ratio": (
        "dmdlib/evaluation/rows.py",
        'values, teacher[key], floor[key], floor.get(f"{key}_se", 0.0)',
        "values, teacher[key]",
        ["tests/test_evaluate.py"],
    ),
    "floor's standard error left out of the net ratio's": (
        "dmdlib/evaluation/metrics.py",
        "variance = (slope * floor_se) ** 2",
        "variance = 0.0",
        ["tests/test_evaluate.py"],
    ),
    "Inception pixels shifted by half a level": (
        "dmdlib/evaluation/measure.py",
        "pixels = to_uint8(images)",
        "pixels = to_uint8(images - 1 / 255)",
        ["tests/test_evaluate.py"],
    ),
    "evaluate's teacher row unguided": (
        "dmdlib/evaluation/rows.py",
        '"teacher": teacher_rows(all_params.pairs.guidance),',
        '"teacher": teacher_rows(1.0),',
        ["tests/test_evaluate.py"],
    ),
    "GAN generator loss sign flipped": (
        "dmdlib/training/gan.py",
        "return F.softplus(-fake_logits).mean()",
        "return F.softplus(fake_logits).mean()",
        ["tests/test_dmd2.py"],
    ),
    "GAN head's real and fake logits swapped": (
        "dmdlib/training/dmd.py",
        "loss_head = head_gan_loss(logits[len(x) :], logits[: len(x)])",
        "loss_head = head_gan_loss(logits[: len(x)], logits[len(x) :])",
        ["tests/test_dmd2.py"],
    ),
    "backward simulation re-noised at sigma_k, not sigma_k+1": (
        "dmdlib/generators/generator.py",
        "x = denoised + self.sigmas[k + 1] * as_draws(rng)",
        "x = denoised + self.sigmas[k] * as_draws(rng)",
        ["tests/test_dmd2.py"],
    ),
    "Heun schedule rho 3 instead of 7": (
        "dmdlib/denoisers/sampling.py",
        "steps: int, rho: float = 7.0)",
        "steps: int, rho: float = 3.0)",
        ["tests/test_denoisers.py"],
    ),
    "DDPM UNet called without its class labels": (
        "dmdlib/denoisers/discrete.py",
        "return self.network(x_t, t, class_labels=cond).sample",
        "return self.network(x_t, t, class_labels=None if cond is None else torch.zeros_like(cond)).sample",
        ["tests/test_discrete_teachers.py"],
    ),
    "regression input scaled by sigma, not prior_scale": (
        "dmdlib/training/dmd.py",
        "pairs.noise * generator.denoiser.prior_scale(generator.sigma)",
        "pairs.noise * generator.sigma",
        ["tests/test_discrete_teachers.py"],
    ),
    "library resume ignoring the fingerprint": (
        "dmdlib/training/distill.py",
        'if state.get("fingerprint") != fingerprint:\n        log.info("ignoring',
        'if False:\n        log.info("ignoring',
        ["tests/test_distill.py"],
    ),
    "pair set left out of distill's checkpoint settings": (
        "dmd/stages/distill.py",
        'settings["pair_set"] = inputs.pairs.description()',
        "pass",
        ["tests/test_code_changes.py"],
    ),
    "code left out of distill's checkpoint settings": (
        "dmd/stages/distill.py",
        '"code": code_of(__spec__.name),',
        "",
        ["tests/test_code_changes.py"],
    ),
    "code digest not following imports": (
        "dmdlib/provenance.py",
        "                todo.append(imported)",
        "                pass",
        ["tests/test_code_changes.py"],
    ),
    "teacher digest of the weights only": (
        "dmdlib/teachers/loading.py",
        "digest.update(json.dumps(module_settings(denoiser), sort_keys=True).encode())",
        "pass",
        ["tests/test_code_changes.py"],
    ),
    "regression warm-up ignored": (
        "dmdlib/training/objectives/dmd.py",
        "warm_up = params.regression_warmup_steps if parts.regression_loss is not None else 0",
        "warm_up = 0",
        ["tests/test_distill.py"],
    ),
    "stratified subset rounding the smallest remainders up": (
        "dmdlib/data/prepared.py",
        'quota[np.argsort(quota - exact, kind="stable")',
        'quota[np.argsort(exact - quota, kind="stable")',
        ["tests/test_evaluate.py"],
    ),
    "profiles' DM range left to the embedded default": (
        "pipelines/sd/params.yaml",
        "  dm_sigma_max: null",
        "",
        ["tests/test_params.py"],
    ),
    "SiD identity term's sign flipped": (
        "dmdlib/training/losses.py",
        "per_pixel = (difference * ((mu_real - x) - alpha * difference))",
        "per_pixel = (difference * ((x - mu_real) - alpha * difference))",
        ["tests/test_sid.py"],
    ),
    "SiD alpha taken as 1": (
        "dmdlib/training/losses.py",
        "((mu_real - x) - alpha * difference)",
        "((mu_real - x) - 1.0 * difference)",
        ["tests/test_sid.py"],
    ),
    "SiD normaliser dropped": (
        "dmdlib/training/losses.py",
        ".flatten(1) * weight[:, None]",
        ".flatten(1)",
        ["tests/test_sid.py"],
    ),
    "SiD normaliser not held fixed": (
        "dmdlib/training/losses.py",
        "    with torch.no_grad():\n        weight = 1.0 / (x - mu_real).abs().flatten(1).mean(1).clamp_min(1e-5)",
        "    if True:\n        weight = 1.0 / (x - mu_real).abs().flatten(1).mean(1).clamp_min(1e-5)",
        ["tests/test_sid.py"],
    ),
    "SiD's generator step reaching the fake denoiser's weights": (
        "dmdlib/training/objectives/sid.py",
        "with without_parameter_grads(self.fake_denoiser):",
        "if True:",
        ["tests/test_sid.py"],
    ),
}


def _not_copied(folder: str, names: list[str]) -> set[str]:
    """Caches and the environment anywhere; the pipeline's outputs (data/, models/) at the root only: dmdlib/data is
    code, and a copy without it would import the unmutated original through the editable install."""
    skipped = {".venv", ".git", "__pycache__", ".dvc"} | ({"data", "models"} if Path(folder) == ROOT else set())
    return skipped & set(names)


def run(name: str, file: str, code: str, replacement: str, tests: list[str]) -> str:
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "project"
        shutil.copytree(ROOT, copy, ignore=_not_copied)
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
