"""One DMD step at the users' model sizes, random weights, no download: time per pass and peak memory per memory option;
and the pair reader's resident memory at 10k and 100k SD-sized pairs.

    python benchmarks/scale.py [--models cifar10-ddpmpp imagenet64-adm sd15-unet ...] [--batches 1 2]
                               [--options base ckpt bf16 lora all] [--repeats 3] [--pairs 10000 100000]

Every model of `MODELS` is first counted on the meta device (exact parameter counts, no memory) for the memory
arithmetic table; then the chosen ones run as real denoiser, fake denoiser and generator (three copies, AdamW for
two) through the project's own `generator_step` (DM loss plus an L2 regression batch of the same size) and
`fake_denoiser_step`, each option applied by the same functions `distill` uses: `ckpt` gradient checkpointing of
G and D_fake, `bf16` the frozen real denoiser in bf16, `lora` a rank-64 LoRA fake denoiser (peft; Linear/Conv2d
networks only), `all` the three together, `all+glora` and a rank-64 LoRA generator. The video transformers are
counted at their native clips (`video_table`: tokens, activations, what fits a GPU); Wan runs measured steps at a
reduced clip (9 frames of 64x64). Each configuration runs in a fresh process: one warm-up step, then
`--repeats` timed steps. Forward times come from hooks on the three networks; "G backward" and "fake backward"
are each step's remainder (backward, clipping, AdamW). Peak memory: the CUDA allocator's peak on a GPU; on the
CPU the resident set (sampled every 5 ms) during the timed steps, and before them ("before step" = weights,
gradients, AdamW state). The pair reader rows write SD v1.5-sized pairs (4x64x64 latents, float16) with the
`pairs` stage's writer (the smallest count distinct, larger ones hard-linking those shards), then draw 200
random batches of 32 through `PairReader` in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SD15_UNET = dict(sample_size=64, cross_attention_dim=768)  # UNet2DConditionModel's defaults are SD v1.5's
SDXL_UNET = dict(
    sample_size=128,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    cross_attention_dim=2048,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
MODELS = {  # name: (family, constructor kwargs, [tokens, width] of its text condition or None)
    "cifar10-ddpmpp": (
        "edm",
        (
            "VPPrecond",
            dict(
                img_resolution=32,
                img_channels=3,
                label_dim=10,
                model_type="SongUNet",
                embedding_type="positional",
                encoder_type="standard",
                decoder_type="standard",
                channel_mult_noise=1,
                resample_filter=[1, 1],
                model_channels=128,
                channel_mult=[2, 2, 2],
                augment_dim=9,
                dropout=0.13,
            ),
        ),
        None,
    ),
    "imagenet64-adm": (
        "edm",
        (
            "EDMPrecond",
            dict(
                img_resolution=64,
                img_channels=3,
                label_dim=1000,
                model_type="DhariwalUNet",
                model_channels=192,
                channel_mult=[1, 2, 3, 4],
                dropout=0.1,
                use_fp16=True,
            ),
        ),
        None,
    ),
    "sd15-unet": ("unet", SD15_UNET, (77, 768)),
    "sdxl-unet": ("sdxl", SDXL_UNET, (77, 2048)),
    "dit-xl2-256": (
        "dit",
        dict(
            sample_size=32,
            num_layers=28,
            num_attention_heads=16,
            attention_head_dim=72,
            in_channels=4,
            out_channels=8,
            patch_size=2,
            num_embeds_ada_norm=1000,
        ),
        None,
    ),
    "sd3-medium": (
        "sd3",
        dict(
            sample_size=128,
            num_layers=24,
            attention_head_dim=64,
            num_attention_heads=24,
            joint_attention_dim=4096,
            caption_projection_dim=1536,
            pooled_projection_dim=2048,
            out_channels=16,
            pos_embed_max_size=192,
        ),
        None,
    ),
    "flux-dev": ("flux", dict(guidance_embeds=True), None),
    # video transformers, configs as in their diffusers folders (model cards: Wan-AI, THUDM, Lightricks)
    "wan2.1-t2v-1.3b": (
        "wan",
        dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096),
        (512, 4096),
    ),
    "wan2.1-t2v-14b": ("wan", dict(), (512, 4096)),  # WanTransformer3DModel's defaults are the 14B's
    "wan2.2-ti2v-5b": (
        "wan",
        dict(
            num_attention_heads=24,
            attention_head_dim=128,
            ffn_dim=14336,
            num_layers=30,
            in_channels=48,
            out_channels=48,
        ),
        (512, 4096),
    ),
    "cogvideox-2b": ("cogvideox", dict(), (226, 4096)),  # CogVideoXTransformer3DModel's defaults are the 2B's
    "cogvideox-5b": (
        "cogvideox",
        dict(num_attention_heads=48, num_layers=42, use_rotary_positional_embeddings=True),
        (226, 4096),
    ),
    "ltx-video-2b": ("ltx", dict(), (128, 4096)),  # LTXVideoTransformer3DModel's defaults are LTX-Video's
}
# native clips: (frames, height, width) in pixels, VAE (temporal, spatial) compression, latent channels, and the
# transformer's (temporal, spatial) patch: what sets the token count of one sample
VIDEO = {
    "wan2.1-t2v-1.3b": ((81, 480, 832), (4, 8), 16, (1, 2)),
    "wan2.1-t2v-14b": ((81, 720, 1280), (4, 8), 16, (1, 2)),
    "wan2.2-ti2v-5b": ((121, 704, 1280), (4, 16), 48, (1, 2)),
    "cogvideox-2b": ((49, 480, 720), (4, 8), 16, (1, 2)),
    "cogvideox-5b": ((49, 480, 720), (4, 8), 16, (1, 2)),
    "ltx-video-2b": ((161, 512, 704), (8, 32), 128, (1, 1)),
}
CLASSES = {
    "unet": "UNet2DConditionModel",
    "sdxl": "UNet2DConditionModel",
    "dit": "DiTTransformer2DModel",
    "sd3": "SD3Transformer2DModel",
    "flux": "FluxTransformer2DModel",
    "wan": "WanTransformer3DModel",
    "cogvideox": "CogVideoXTransformer3DModel",
    "ltx": "LTXVideoTransformer3DModel",
}
OPTIONS = {
    "base": (),
    "ckpt": ("ckpt",),
    "bf16": ("bf16",),
    "lora": ("lora",),
    "all": ("ckpt", "bf16", "lora"),
    "all+glora": ("ckpt", "bf16", "lora", "glora"),  # and a LoRA generator (distill.generator_lora_rank)
}
LORA_RANK = 64


def _network(model: str):
    family, kwargs, _ = MODELS[model]
    if family == "edm":
        from dmdlib.denoisers.edm import build_network

        return build_network(*kwargs)
    import diffusers

    return getattr(diffusers, CLASSES[family])(**kwargs)


def parameter_count(model: str) -> int:
    """Exact parameters of the architecture, built on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in _network(model).parameters())


def _denoiser(model: str):
    """The real denoiser of a measured model, and a function making one batch of `cond`."""
    import torch

    family, _, text = MODELS[model]
    network = _network(model)
    if family == "edm":
        from dmdlib.denoisers.edm import EDMDenoiser

        denoiser = EDMDenoiser(network)
        return denoiser, lambda batch, rng: torch.randint(0, denoiser.num_classes, (batch,), generator=rng)
    if family == "wan":  # at a reduced clip: 9 frames of 64x64 (3 x 8 x 8 latents)
        from dmdlib.denoisers.video_transformers import WanDenoiser

        denoiser = WanDenoiser(network, 3.0, 1000)
        denoiser.sample_shape = (network.config.in_channels, 3, 8, 8)
        return denoiser, lambda batch, rng: torch.randn(batch, *text, generator=rng)
    if family != "unet":
        raise SystemExit(
            f"{model}: counted for the memory tables only; measured steps run the EDM models, sd15-unet and Wan"
        )
    from diffusers import DDPMScheduler

    from dmdlib.denoisers.discrete import LatentDenoiser

    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    denoiser = LatentDenoiser(network, scheduler.alphas_cumprod, "epsilon", dict(scheduler.config))
    denoiser.sample_shape = (4, 64, 64)
    return denoiser, lambda batch, rng: torch.randn(batch, *text, generator=rng)


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


def measure(model: str, batch: int, option: str, repeats: int) -> dict:
    """One configuration, in this process."""
    import torch

    from dmdlib.denoisers.base import frozen, trainable_copy
    from dmdlib.generators.generator import Generator
    from dmdlib.training.dmd import GeneratorBatch, Pairs, Update, fake_denoiser_step, generator_step
    from dmdlib.training.memory import add_lora, run_in_bfloat16
    from dmdlib.training.objectives import DistributionMatching, Regression
    from dmdlib.training.regression import l2_loss

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    real, make_cond = _denoiser(model)
    real = frozen(real).to(device)
    generator, fake = Generator.from_teacher(real), trainable_copy(real)
    options = OPTIONS[option]
    if "lora" in options:
        add_lora(fake, LORA_RANK, "--options lora")
    if "glora" in options:
        add_lora(generator.denoiser, LORA_RANK, "--options all+glora")
    if "ckpt" in options:
        generator.denoiser.enable_gradient_checkpointing()
        fake.enable_gradient_checkpointing()
    if "bf16" in options:
        run_in_bfloat16(real)
    optimizers = [
        Update(torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], 1e-5)) for net in (generator, fake)
    ]
    terms = {
        "dm": DistributionMatching(real_denoiser=real, fake_denoiser=fake),
        "reg": Regression(distance=l2_loss, weight=0.25),
    }
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
    shape = real.sample_shape
    rng = torch.Generator().manual_seed(0)

    def step():
        cond = make_cond(batch, rng).to(device)
        noise, pairs_noise, pairs_target = (torch.randn(batch, *shape, generator=rng).to(device) for _ in range(3))
        phase[0], start = "generator", now()
        result = generator_step(
            generator,
            optimizers[0],
            GeneratorBatch(noise, cond, pairs=Pairs(pairs_noise, pairs_target, cond)),
            rng,
            terms=terms,
        )
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
    return {
        "model": model,
        "params_m": sum(p.numel() for p in real.parameters()) / 1e6,
        "batch": batch,
        "option": option,
        "step_s": sum(totals) / repeats,
        "passes": {name: value / repeats for name, value in passes.items()},
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else peak.peak,
        "resident_mib": torch.cuda.memory_allocated() / 2**20 if cuda else resident,
        "device": torch.cuda.get_device_name() if cuda else f"cpu, {torch.get_num_threads()} threads",
    }


def reader_memory(folder: Path, count: int) -> dict:
    """Resident memory of a PairReader over the first `count` pairs' shards after 200 random batches of 32."""
    import torch

    from dmdlib.training.pairs import PairReader

    before = _rss_mib()
    reader = PairReader(folder, PAIR_META)
    assert len(reader) == count, (len(reader), count)
    rng = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with PeakResident() as peak:
        for _ in range(200):
            reader.batch(torch.randint(0, len(reader), (32,), generator=rng))
    return {
        "pairs": count,
        "before_mib": before,
        "peak_mib": peak.peak,
        "ms_per_batch": (time.perf_counter() - start) * 5,
    }


PAIR_META = {
    "teacher": "benchmark",
    "sampler": "heun",
    "steps": 1,
    "guidance": 1.0,
    "shape": [4, 64, 64],
    "dtype": "float16",
}


def write_pairs(folder: Path, count: int, distinct: int, shard_size: int = 1000) -> None:
    """`count` SD v1.5-sized random pairs in the `pairs` stage's shard format; shards past the first `distinct`
    pairs are hard links of those (the same bytes under further shard names: reads and memory as for distinct
    pairs, without writing gigabytes of random numbers)."""
    import torch

    from dmdlib.training.pairs import ShardPlan, write_shard

    plan = ShardPlan(count, shard_size)
    originals = -(-distinct // shard_size)
    for shard in range(plan.shards):
        path = folder / plan.name(shard)
        if path.exists():
            continue
        if shard >= originals:
            os.link(folder / plan.name(shard % originals), path)
            continue
        seeds = plan.seeds(shard)
        noise, target = torch.randn(len(seeds), 4, 64, 64), torch.randn(len(seeds), 4, 64, 64)
        write_shard(path, seeds, noise, target, [-1] * len(seeds), PAIR_META)


def arithmetic_table() -> None:
    """Bytes per parameter of one DMD step's state, from exact parameter counts."""
    print(
        "| model | params | fp32 G+D_fake+real, 2 grads, 2 AdamW (36 B/param) | bf16 real (34 B/param) "
        "| LoRA D_fake + bf16 real (~22 B/param) |"
    )
    print("|---|---|---|---|---|")
    for model in MODELS:
        count = parameter_count(model)
        print(
            f"| {model} | {count / 1e6:.1f}M | {36 * count / 2**30:.1f} GiB | {34 * count / 2**30:.1f} GiB "
            f"| {22 * count / 2**30:.1f} GiB |"
        )


def tokens(model: str) -> int:
    """Transformer tokens of one native clip: latent frames x height x width over the patch."""
    (frames, height, width), (temporal, spatial), _, (patch_t, patch) = VIDEO[model]
    latent_frames = (frames - 1) // temporal + 1
    return -(-latent_frames // patch_t) * (height // spatial // patch) * (width // spatial // patch)


def video_table(gpu_gib: float = 80.0) -> None:
    """Per GPU at batch 1 and the native clip: the DMD step's state (36 / 34 / 22 B per parameter, as above, and
    sharded over 8 GPUs by FSDP) and the activations one trained network keeps for its backward, estimated as
    Korthikanti et al. (2022) count a transformer layer in bf16 with flash attention, 34 s h bytes (s tokens, h
    width; cross-attention and modulation not counted: a lower bound), or 2 s h with every block checkpointed
    (its input) plus one block recomputed; then the first option set that fits `gpu_gib`."""
    import torch

    print(
        f"\n| model | params | native clip | latents | tokens | activations / ckpt | state fp32 / bf16 real "
        f"/ +LoRA fake | with FSDP x8 | first fit on {gpu_gib:.0f} GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for model, ((frames, height, width), (temporal, spatial), channels, _) in VIDEO.items():
        with torch.device("meta"):
            network = _network(model)
        count = sum(p.numel() for p in network.parameters())
        config = network.config
        width_h = config.num_attention_heads * config.attention_head_dim
        layers, s = config.num_layers, tokens(model)
        full, checkpointed = 34 * s * width_h * layers / 2**30, (2 * s * width_h * layers + 34 * s * width_h) / 2**30
        states = {"fp32": 36 * count / 2**30, "bf16 real": 34 * count / 2**30, "+LoRA fake": 22 * count / 2**30}
        sharded = 36 * count / 8 / 2**30
        candidates = [
            ("bf16 real", states["bf16 real"] + full),
            ("bf16 real + ckpt", states["bf16 real"] + checkpointed),
            ("LoRA fake + bf16 real + ckpt", states["+LoRA fake"] + checkpointed),
            ("FSDP x8 + ckpt", sharded + checkpointed),
            ("FSDP x8 + LoRA fake + bf16 real + ckpt", states["+LoRA fake"] / 8 + checkpointed),
        ]
        fit = next((name for name, need in candidates if need <= gpu_gib), "none of these (sequence parallelism)")
        latent = f"{channels}x{(frames - 1) // temporal + 1}x{height // spatial}x{width // spatial}"
        print(
            f"| {model} | {count / 1e9:.2f}B | {frames}x{height}x{width} | {latent} | {s:,} | {full:.1f} / "
            f"{checkpointed:.1f} GiB | {states['fp32']:.0f} / {states['bf16 real']:.0f} / {states['+LoRA fake']:.0f}"
            f" GiB | {sharded:.1f} GiB | {fit} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models",
        nargs="*",
        default=["cifar10-ddpmpp", "imagenet64-adm"],
        choices=list(MODELS),
        help="models to measure (all are counted for the memory table)",
    )
    parser.add_argument(
        "--batches", nargs="+", type=int, default=[1, 2], help="DM batch sizes (the regression batch is as large)"
    )
    parser.add_argument(
        "--options",
        nargs="+",
        default=["base", "ckpt", "bf16"],
        choices=list(OPTIONS),
        help="memory options; lora needs Linear/Conv2d networks (sd15-unet, Wan), not EDM's own layers",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per configuration, after one warm-up step")
    parser.add_argument(
        "--pairs", nargs="*", type=int, default=[10_000, 100_000], help="pair counts for the reader rows"
    )
    parser.add_argument(
        "--pairs-folder", type=Path, default=None, help="where to write the pairs (default: a temporary folder)"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print its JSON
    parser.add_argument("--reader", help=argparse.SUPPRESS)  # internal: folder,count
    args = parser.parse_args()
    if args.one:
        model, batch, option = args.one.split(",")
        print(json.dumps(measure(model, int(batch), option, args.repeats)))
        return
    if args.reader:
        folder, count = args.reader.split(",")
        print(json.dumps(reader_memory(Path(folder), int(count))))
        return
    arithmetic_table()
    video_table()
    rows = []
    for model in args.models:
        for batch in args.batches:
            for option in args.options:
                result = subprocess.run(
                    [sys.executable, __file__, "--one", f"{model},{batch},{option}", "--repeats", str(args.repeats)],
                    capture_output=True,
                    text=True,
                )
                if result.returncode != 0:
                    print(
                        f"{model} batch {batch} {option}: failed: {result.stderr.strip().splitlines()[-1]}",
                        file=sys.stderr,
                    )
                    continue
                rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
                print(rows[-1], file=sys.stderr)
    if rows:
        names = list(rows[0]["passes"])
        print(
            f"\n| model | params | batch | option | step s | {' | '.join(names)} | peak MiB | before step MiB "
            "| device |"
        )
        print("|---" * (9 + len(names) - 1) + "|")
        for r in rows:
            passes = " | ".join(f"{r['passes'][name]:.2f}" for name in names)
            print(
                f"| {r['model']} | {r['params_m']:.1f}M | {r['batch']} | {r['option']} | {r['step_s']:.2f} | {passes} "
                f"| {r['peak_mib']:.0f} | {r['resident_mib']:.0f} | {r['device']} |"
            )
    if args.pairs:
        with tempfile.TemporaryDirectory() as scratch:
            print("\n| pairs (4x64x64 fp16) | resident before MiB | peak resident MiB | ms per batch of 32 |")
            print("|---|---|---|---|")
            for count in args.pairs:
                folder = (args.pairs_folder or Path(scratch)) / f"pairs-{count}"
                folder.mkdir(parents=True, exist_ok=True)
                write_pairs(folder, count, distinct=min(args.pairs))
                output = subprocess.run(
                    [sys.executable, __file__, "--reader", f"{folder},{count}"],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                r = json.loads(output.strip().splitlines()[-1])
                print(f"| {r['pairs']:,} | {r['before_mib']:.0f} | {r['peak_mib']:.0f} | {r['ms_per_batch']:.1f} |")


if __name__ == "__main__":
    main()
