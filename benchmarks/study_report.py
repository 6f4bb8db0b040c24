"""Assemble docs/results.md from the study's sweep directories (their report.md and plots)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--seconds", type=int, default=None)
    args = parser.parse_args()
    figures = args.output.parent / "results"
    figures.mkdir(parents=True, exist_ok=True)
    parts = ["# The sparsity study", "",
             "Produced by `benchmarks/study.sh` (sweeps with `edgesparse sweep`; seeds fixed; accuracy on the "
             "held-out test split; latency measured with the device runner on this 2-core x86-64 machine, "
             "ai-edge-litert 2.3)." + (f" The whole study took {args.seconds / 60:.0f} minutes." if args.seconds else ""),
             ""]
    for sweep in args.sweeps:
        report = (sweep / "report.md").read_text()
        data = json.loads((sweep / "results.json").read_text())
        prefix = sweep.name
        for png in sweep.glob("*.png"):
            shutil.copy2(png, figures / f"{prefix}_{png.name}")
            report = report.replace(f"({png.name})", f"(results/{prefix}_{png.name})")
        report = report.replace("# Sweep: ", "## ", 1).replace("\n## ", "\n### ")
        parts += [report.replace("### ", "### ", 1), "",
                  f"Axes: {', '.join(data['axes'])}; shared baselines: "
                  + ", ".join(f"seed {b['seed']}: {b['accuracy']:.2%}" for b in data["baselines"].values()), ""]
    args.output.write_text("\n".join(parts))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
