"""Table of scale.py rows (from a gpu.sh scale.log) with achieved TFLOP/s, from flops.json (flops.py's output).
    python benchmarks/gpu/report.py OUT/scale.log benchmarks/gpu/flops.json

Model FLOPs per configuration at DM batch B (scale.py: the regression batch is as large; DM forwards run without grad):
    G step    = G forward+backward on 2B samples + real forward on B + fake forward on B
    fake step = fake forward+backward on B
Gradient checkpointing's recomputed forwards are not counted (model FLOPs, as in MFU)."""

import ast
import json
import sys

log, flops = sys.argv[1], json.load(open(sys.argv[2]))
print(
    "| model | params | batch | option | G step s | fake step s | peak GiB | G TFLOP/s | fake TFLOP/s | step TFLOP/s |"
)
print("|---|---|---|---|---|---|---|---|---|---|")
for line in open(log):
    if "{'model'" not in line:
        continue
    r = ast.literal_eval(line[line.index("{'model'") :].strip())
    p, b = r["passes"], r["batch"]
    g = p["G forward"] + p["real forward"] + p["fake forward (DM)"] + p["G backward+step"]
    f = p["fake forward (loss)"] + p["fake backward+step"]
    fl = flops.get(r["model"])
    if fl:
        fwd, fb = fl["forward_gflop"] / 1e3, fl["forward_backward_gflop"] / 1e3  # TFLOP per sample
        g_tf, f_tf = (2 * b * fb + 2 * b * fwd), b * fb
        rates = f"{g_tf / g:.1f} | {f_tf / f:.1f} | {(g_tf + f_tf) / (g + f):.1f}"
    else:
        rates = "- | - | -"
    print(
        f"| {r['model']} | {r['params_m']:.1f}M | {b} | {r['option']} | {g:.3f} | {f:.3f} | {r['peak_mib'] / 1024:.1f} "
        f"| {rates} |"
    )
