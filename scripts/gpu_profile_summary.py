"""Summarise the kernel profile taken by scripts/gpu-check.sh (section 4).

    python3 scripts/gpu_profile_summary.py nsys OUT [WALL.json]  # OUT/profile_cuda_gpu_kern_sum.csv (+ _cuda_api_sum.csv)
    python3 scripts/gpu_profile_summary.py ncu OUT [WALL.json]   # OUT/profile-ncu.csv (--csv --page raw, gpu__time_duration.sum)

The wall time per step comes from WALL.json (an unprofiled `fine bench step` of the same
config), else from OUT/profile-step.json (the profiled run, which covered warmup 1 +
steps train steps under nsys). Writes OUT/profile.md (the 25 kernels with the
most GPU time, and for nsys the CUDA API calls) and prints one line for the table:
GPU kernel time per step against wall time per step, launches per step, top kernels.
"""

import csv
import json
import os
import re
import sys
from collections import defaultdict


def short(name):
    """A kernel's name without template arguments and parameter lists."""
    name = re.sub(r"\(.*", "", name)
    depth, out = 0, []
    for ch in name:
        depth += ch == "<"
        if depth == 0:
            out.append(ch)
        depth -= ch == ">"
    return "".join(out).replace("void ", "").strip()[:60]


def read_nsys(out):
    kern = defaultdict(lambda: [0.0, 0])  # name -> [ns, launches]
    with open(os.path.join(out, "profile_cuda_gpu_kern_sum.csv")) as f:
        for row in csv.DictReader(f):
            k = kern[short(row["Name"])]
            k[0] += float(row["Total Time (ns)"])
            k[1] += int(row["Instances"])
    api = []
    path = os.path.join(out, "profile_cuda_api_sum.csv")
    if os.path.exists(path):
        with open(path) as f:
            for row in csv.DictReader(f):
                api.append((row["Name"], float(row["Total Time (ns)"]), int(row["Num Calls"])))
    return kern, api


def read_ncu(out):
    kern = defaultdict(lambda: [0.0, 0])
    with open(os.path.join(out, "profile-ncu.csv")) as f:
        lines = [line for line in f if line.startswith('"')]  # ncu's own log lines are unquoted
    rows = list(csv.reader(lines))
    head = rows[0]
    name_i, time_i = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
    unit = rows[1][time_i]  # the units row
    scale = {"nsecond": 1.0, "usecond": 1e3, "msecond": 1e6, "second": 1e9}.get(unit, 1.0)
    for r in rows[2:]:
        k = kern[short(r[name_i])]
        k[0] += float(r[time_i].replace(",", "")) * scale
        k[1] += 1
    return kern, []


def load(path):
    """The last JSON line of a file, or {} when there is none."""
    try:
        return json.loads(open(path).read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return {}


def main():
    tool, out = sys.argv[1], sys.argv[2]
    kern, api = read_nsys(out) if tool == "nsys" else read_ncu(out)
    prof, wall = (load(os.path.join(out, "profile-step.json")), load(sys.argv[3] if len(sys.argv) > 3 else ""))
    step = wall or prof
    steps = 1 if tool == "ncu" else int(prof.get("steps", 3)) + 1  # nsys ran warmup 1 + steps
    total = sum(v[0] for v in kern.values())
    launches = sum(v[1] for v in kern.values())
    top = sorted(kern.items(), key=lambda kv: -kv[1][0])
    with open(os.path.join(out, "profile.md"), "w") as f:
        f.write(f"# Kernel profile ({tool}), {steps} step(s)\n\n")
        f.write(f"GPU kernel time {total / 1e6 / steps:.1f} ms/step, {launches / steps:.0f} launches/step; "
                f"wall step_ms (median, bench step) {step.get('step_ms', '?')}\n\n")
        f.write("| kernel | ms/step | share | launches/step |\n|---|---:|---:|---:|\n")
        for name, (ns, n) in top[:25]:
            f.write(f"| `{name}` | {ns / 1e6 / steps:.2f} | {100 * ns / total:.1f}% | {n / steps:.0f} |\n")
        if api:
            f.write("\n| CUDA API call | ms/step | calls/step |\n|---|---:|---:|\n")
            for name, ns, n in sorted(api, key=lambda a: -a[1])[:15]:
                f.write(f"| `{name}` | {ns / 1e6 / steps:.2f} | {n / steps:.0f} |\n")
    tops = ", ".join(f"{name} {100 * ns / total:.0f}%" for name, (ns, _) in top[:3])
    wall = step.get("step_ms")
    wall_s = f" of {wall:.1f} ms wall" if isinstance(wall, (int, float)) else ""
    print(f"kernels {total / 1e6 / steps:.1f} ms/step{wall_s}, {launches / steps:.0f} launches/step; top: {tops}")


if __name__ == "__main__":
    main()
