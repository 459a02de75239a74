"""One DMD step at the published EDM sizes, random weights, no download: time per network pass and peak memory.

    python benchmarks/edm_scale.py [--models cifar10-ddpmpp imagenet64-adm] [--batches 1 2] [--repeats 3]

Builds EDM's CIFAR-10 DDPM++ (VPPrecond, 55.7M parameters) and ImageNet-64 ADM (EDMPrecond, 295.9M) with the
project's own networks, as the real denoiser, fake denoiser and generator (three copies, AdamW for two), and runs
the project's own `generator_step` (DM loss plus an L2 regression batch of the same size) and `fake_denoiser_step`,
with and without gradient checkpointing. Each configuration runs in a fresh process: one warm-up step (AdamW
allocates its state), then `--repeats` timed steps. Forward times come from hooks on the three networks; "G
backward" and "fake backward" are each step's remainder (backward, clipping, AdamW). Peak memory: the CUDA
allocator's peak on a GPU; on the CPU the resident set (sampled every 5 ms) during the timed steps, and before
them ("resident" = weights, gradients, AdamW state).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

MODELS = {  # EDM's training configurations (EDM train.py presets; EDM paper Table 7)
    "cifar10-ddpmpp": ("VPPrecond", dict(img_resolution=32, img_channels=3, label_dim=10, model_type="SongUNet",
                                         embedding_type="positional", encoder_type="standard", decoder_type="standard",
                                         channel_mult_noise=1, resample_filter=[1, 1], model_channels=128,
                                         channel_mult=[2, 2, 2], augment_dim=9, dropout=0.13)),
    "imagenet64-adm": ("EDMPrecond", dict(img_resolution=64, img_channels=3, label_dim=1000, model_type="DhariwalUNet",
                                          model_channels=192, channel_mult=[1, 2, 3, 4], dropout=0.1, use_fp16=True)),
}


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakResident:
    """Highest resident set size seen while active (a sampling thread)."""

    def __enter__(self):
        self.peak, self._running = _rss_mib(), True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, _rss_mib())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def measure(model: str, batch: int, checkpointing: bool, repeats: int) -> dict:
    """One configuration, in this process."""
    import torch

    from dmdlib.denoisers.base import frozen, trainable_copy
    from dmdlib.denoisers.edm import EDMDenoiser, build_network
    from dmdlib.dmd import GeneratorBatch, GeneratorObjective, Pairs, Update, fake_denoiser_step, generator_step
    from dmdlib.generator import Generator
    from dmdlib.regression import l2_loss

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    class_name, kwargs = MODELS[model]
    real = frozen(EDMDenoiser(build_network(class_name, kwargs))).to(device)
    generator, fake = Generator.from_teacher(real), trainable_copy(real)
    if checkpointing:
        generator.denoiser.enable_gradient_checkpointing()
        fake.enable_gradient_checkpointing()
    optimizers = [Update(torch.optim.AdamW(net.parameters(), 1e-5)) for net in (generator, fake)]
    objective = GeneratorObjective(real, fake, lambda_reg=0.25, regression_loss=l2_loss)
    seconds: dict[str, float] = {}
    phase = ["generator"]

    def now():
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def timed(name, module):
        starts = []
        module.register_forward_pre_hook(lambda *_: starts.append(now()))

        def done(*_):
            key = f"{name} ({phase[0]} step)"
            seconds[key] = seconds.get(key, 0.0) + now() - starts.pop()

        module.register_forward_hook(done)

    timed("G forward", generator.denoiser)
    timed("real forward", real)
    timed("fake forward", fake)
    shape, classes = real.sample_shape, real.num_classes
    rng = torch.Generator().manual_seed(0)

    def step():
        cond = torch.randint(0, classes, (batch,), generator=rng).to(device)
        noise, pairs_noise, pairs_target = (torch.randn(batch, *shape, generator=rng).to(device) for _ in range(3))
        phase[0], start = "generator", now()
        result = generator_step(generator, optimizers[0], GeneratorBatch(noise, cond, pairs=Pairs(pairs_noise, pairs_target, cond)),
                                rng, objective=objective)
        phase[0], middle = "fake", now()
        fake_denoiser_step(fake, optimizers[1], result.x, cond, rng)
        return middle - start, now() - middle

    step()  # warm-up: AdamW state, allocator pools
    seconds.clear()
    resident = _rss_mib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    totals = [0.0, 0.0]
    with PeakResident() as peak:
        for _ in range(repeats):
            totals = [a + b for a, b in zip(totals, step())]
    passes = {
        "G forward": seconds["G forward (generator step)"],
        "real forward": seconds["real forward (generator step)"],
        "fake forward (DM)": seconds["fake forward (generator step)"],
        "fake forward (loss)": seconds["fake forward (fake step)"],
    }
    passes["G backward+step"] = totals[0] - passes["G forward"] - passes["real forward"] - passes["fake forward (DM)"]
    passes["fake backward+step"] = totals[1] - passes["fake forward (loss)"]
    return {"model": model, "params_m": sum(p.numel() for p in real.parameters()) / 1e6, "batch": batch,
            "checkpointing": checkpointing, "step_s": sum(totals) / repeats,
            "passes": {name: value / repeats for name, value in passes.items()},
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else peak.peak,
            "resident_mib": torch.cuda.memory_allocated() / 2**20 if cuda else resident,
            "device": torch.cuda.get_device_name() if cuda else f"cpu, {torch.get_num_threads()} threads"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print its JSON
    args = parser.parse_args()
    if args.one:
        model, batch, checkpointing = args.one.split(",")
        print(json.dumps(measure(model, int(batch), checkpointing == "1", args.repeats)))
        return
    rows = []
    for model in args.models:
        for batch in args.batches:
            for checkpointing in (0, 1):
                output = subprocess.run([sys.executable, __file__, "--one", f"{model},{batch},{checkpointing}",
                                         "--repeats", str(args.repeats)], check=True, capture_output=True, text=True).stdout
                rows.append(json.loads(output.strip().splitlines()[-1]))
                print(rows[-1], file=sys.stderr)
    names = list(rows[0]["passes"])
    print(f"| model | params | batch | grad ckpt | step s | {' | '.join(names)} | peak MiB | before step MiB | device |")
    print("|---" * (9 + len(names) - 1) + "|")
    for r in rows:
        passes = " | ".join(f"{r['passes'][name]:.2f}" for name in names)
        print(f"| {r['model']} | {r['params_m']:.1f}M | {r['batch']} | {'on' if r['checkpointing'] else 'off'} | "
              f"{r['step_s']:.2f} | {passes} | {r['peak_mib']:.0f} | {r['resident_mib']:.0f} | {r['device']} |")


if __name__ == "__main__":
    main()
