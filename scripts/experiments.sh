#!/usr/bin/env bash
# The paper's ablations and the DMD2 options on the embedded default, as DVC experiments. Each runs in a
# temporary copy, so the workspace keeps the default run; teacher and pairs come from the cache of a
# finished `make repro`, so only distill and evaluate run. Then print the comparison table.
#   bash scripts/experiments.sh                 all of them, one after another (about 12 hours on 2 cores)
#   bash scripts/experiments.sh gan four-step   some of them
#   JOBS=2 bash scripts/experiments.sh ...      two at a time through `dvc queue`, one thread each: on 2 cores
#                                               about 1.9 DMD steps/s each against 3 for one run on both cores
#   python benchmarks/experiments_table.py      the table again, from `dvc exp show`
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

LADDER="distill.generator_sigmas=[80,10,2,0.5]"  # DMD2-style 4-step sigma ladder
SLOW="$LADDER distill.generator_lr=1e-4"         # the ladder at the lr that trains it well (README, Results)
declare -A SET=(
  [no-regression]="distill.lambda_reg=0"                 # paper "w/o L_reg"; no pairs needed (DMD2 trains this way)
  [no-dm]="distill.dm_weight=0"                          # paper "w/o L_KL": regression only
  [two-time-scales]="distill.fake_steps=2"               # DMD2: N fake-denoiser updates per generator update
  [gan]="distill.gan_generator_weight=3e-3"              # DMD2: GAN head on the fake denoiser's bottleneck
  [gan-x10]="distill.gan_generator_weight=3e-2"          # the same, ten times DMD2's ImageNet weight
  [four-step]="$LADDER"                                  # DMD2: 4-step ladder with backward simulation
  [four-step-gan]="$LADDER distill.gan_generator_weight=3e-3"  # both, as DMD2 does
  [four-step-slow]="$SLOW"                              # the 4-step ladder at the previous lr
  [four-step-gan-slow]="$SLOW distill.gan_generator_weight=3e-3"
  # DMD2's GAN:DM weight ratio (3e-3 : 1) on top of this project's dm_weight 0.1
  [four-step-gan-slow-dmd2-ratio]="$SLOW distill.gan_generator_weight=3e-4"
  # DMD2's ImageNet recipe in one run: plain DMD first, the generator's GAN term for the last third;
  # the same 4,500 steps without the GAN as the control
  [four-step-gan-late]="$SLOW distill.steps=4500 distill.gan_generator_weight=3e-3 distill.gan_start_step=3000"
  [four-step-slow-long]="$SLOW distill.steps=4500"
  # a head loss 100 times stronger in the fake step, so D_fake's bottleneck learns to tell real from generated
  [four-step-gan-slow-head1]="$SLOW distill.gan_generator_weight=3e-3 distill.gan_head_weight=1"
  # the GAN's noise levels capped at sigma 10, as the DM term's (above it a 16x16 digit is noise to the head)
  [four-step-gan-slow-cap10]="$SLOW distill.gan_generator_weight=3e-3 distill.gan_sigma_max=10"
  # the GAN's noise levels kept at sigma 0.2 / 1 and above, where noise hides pixel-level detail (README, Results)
  [four-step-gan-slow-min02]="$SLOW distill.gan_generator_weight=3e-3 distill.gan_sigma_min=0.2"
  [four-step-gan-slow-min1]="$SLOW distill.gan_generator_weight=3e-3 distill.gan_sigma_min=1"
  # a class-aware head: projection discriminator; and the head trained with no GAN gradient for G (the cost's control)
  [four-step-gan-slow-projection]="$SLOW distill.gan_generator_weight=3e-3 distill.gan_class_projection=true"
  [four-step-head-only]="$SLOW distill.gan_generator_weight=1e-9"
  # the head's loss kept out of D_fake's weights, with and without the generator's GAN gradient
  [four-step-gan-slow-detached]="$SLOW distill.gan_generator_weight=3e-3 distill.gan_head_detached=true"
  [four-step-head-only-detached]="$SLOW distill.gan_generator_weight=1e-9 distill.gan_head_detached=true"
  # a ten times faster head kept at sigma 0.2 and above (where it stays at chance at fake_lr), with and without the detach
  [four-step-gan-slow-min02-head-lr]="$SLOW distill.gan_generator_weight=3e-3 distill.gan_sigma_min=0.2 distill.gan_head_lr=1e-3"
  [four-step-gan-slow-min02-head-lr-detached]="$SLOW distill.gan_generator_weight=3e-3 distill.gan_sigma_min=0.2 distill.gan_head_lr=1e-3 distill.gan_head_detached=true"
  [guidance]="distill.guidance_range=[1,3]"              # the scale as an input of the generator
)
ORDER=(no-regression no-dm two-time-scales gan gan-x10 four-step four-step-gan four-step-slow four-step-gan-slow four-step-gan-slow-dmd2-ratio four-step-gan-late four-step-slow-long four-step-gan-slow-head1 four-step-gan-slow-cap10 four-step-gan-slow-min02 four-step-gan-slow-min1 four-step-gan-slow-projection four-step-head-only four-step-gan-slow-detached four-step-head-only-detached four-step-gan-slow-min02-head-lr four-step-gan-slow-min02-head-lr-detached guidance)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ORDER[@]}")
for name in "${names[@]}"; do
  [ -n "${SET[$name]:-}" ] || { echo "unknown experiment '$name'; choose from: ${ORDER[*]}" >&2; exit 2; }
done
JOBS=${JOBS:-1}
for name in "${names[@]}"; do
  dvc exp remove "$name" >/dev/null 2>&1 || true   # a re-run replaces the earlier result of the same name
  args=()
  for setting in ${SET[$name]}; do args+=(-S "$setting"); done
  echo "=== experiment $name: ${SET[$name]}"
  if [ "$JOBS" -gt 1 ]; then
    dvc exp run --queue -n "$name" "${args[@]}"
  else
    dvc exp run --temp -n "$name" "${args[@]}"
  fi
done
if [ "$JOBS" -gt 1 ]; then
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 dvc queue start -j "$JOBS"   # one thread per run: no oversubscription
  until [[ ! "$(dvc queue status)" =~ Queued|Running ]]; do sleep 30; done  # (grep -q would end the pipe early)
  dvc queue status
fi
python benchmarks/experiments_table.py
