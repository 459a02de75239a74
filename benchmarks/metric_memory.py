"""Peak memory and time of evaluate's metric code on one sample set at paper scale, on the CPU, features precomputed.

usage: python benchmarks/metric_memory.py [COUNT ...]   (default: 10000 50000)

Per count, in a fresh process: FID and KID on 2,048-d features (Inception's width) and precision/recall on 128-d
ones (the classifier's, the space `ReferenceSet.quality` uses), random normal features for the reference and the
samples. Peak memory is the process's peak resident size above what it held once the features existed; beside it,
what precision/recall's two whole float64 distance matrices would take (count^2 x 8 bytes each), by arithmetic.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

INCEPTION_DIMS, CLASSIFIER_DIMS = 2048, 128


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def measure(count: int) -> dict:
    """Time and peak memory of FID, KID and precision/recall for `count` samples against `count` references."""
    import torch

    from dmdlib.evaluation.metrics import fid, kid, precision_recall

    rng = torch.Generator().manual_seed(0)
    features = {
        dims: (torch.randn(count, dims, generator=rng), torch.randn(count, dims, generator=rng) + 0.1)
        for dims in (INCEPTION_DIMS, CLASSIFIER_DIMS)
    }
    base = _resident_bytes()
    timings = {}
    start = time.perf_counter()
    fid(*features[INCEPTION_DIMS])
    timings["fid_s"] = time.perf_counter() - start
    start = time.perf_counter()
    kid(*features[INCEPTION_DIMS])
    timings["kid_s"] = time.perf_counter() - start
    start = time.perf_counter()
    precision_recall(*features[CLASSIFIER_DIMS])
    timings["precision_recall_s"] = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"count": count, **timings, "peak_above_features_gib": (peak - base) / 2**30}


def main(counts: list[int]) -> None:
    import torch

    print(f"CPU, {torch.get_num_threads()} threads; one sample set against as many references")
    print("| samples | FID s | KID s | precision/recall s | peak memory above the features | whole matrices take |")
    print("|---|---|---|---|---|---|")
    for count in counts:  # a fresh process each: the peak of one must not hide the next's
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(count)], capture_output=True, text=True, check=True
        )
        row = json.loads(child.stdout.strip().splitlines()[-1])
        whole = 2 * count**2 * 8 / 2**30
        print(
            f"| {count:,} | {row['fid_s']:.1f} | {row['kid_s']:.1f} | {row['precision_recall_s']:.1f} | "
            f"{row['peak_above_features_gib']:.2f} GiB | {whole:.1f} GiB |"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(measure(int(sys.argv[2]))))
    else:
        main([int(arg) for arg in sys.argv[1:]] or [10_000, 50_000])
