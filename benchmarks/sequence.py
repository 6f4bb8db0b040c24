"""Sequence models at 80% sparsity + int8 vs their dense models (issue 29, item 7).

Each row runs a shipped recipe through ``edgesparse.train`` (nothing downloaded: the built-in generated
``har`` accelerometer windows) and reads the run's own figures on the held-out test split:

* ``lstm``: recipes/har_lstm.yaml as shipped (fused UNIDIRECTIONAL_SEQUENCE_LSTM, batch 1);
* ``gru``: the same recipe with ``model.cell: gru`` (rolled GRU: the builtin WHILE op; TF 2.21's converter
  crashes calibrating it for int8, contained in a child process, so the run keeps what converted and says so);
* further rows (the transformer) are added by their owners as ``ROWS`` entries.

Per row and seed: dense Keras test accuracy, the kept model.tflite's test accuracy and their delta (target:
within 1 point), coverage of the pruned kernels over all parameters (target >= 90%), model.tflite bytes vs
the dense float32 .tflite (target <= 1/4), the kept quantization, and its latency vs the dense .tflite timed
paired in one process (the export's own measurement; this VM drifts 15-30% between processes).

    python benchmarks/sequence.py                    # lstm and gru, seeds 0,1,2
    python benchmarks/sequence.py --rows lstm --seeds 0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgesparse.recipe import load_recipe  # noqa: E402
from edgesparse.run import train  # noqa: E402

#: row name -> (recipe, overrides)
ROWS: dict[str, tuple[str, list[str]]] = {
    "lstm": ("har_lstm.yaml", []),
    "gru": ("har_lstm.yaml", ["model.cell=gru"]),
}


def transformer_rows() -> dict[str, tuple[str, list[str]]]:
    """The transformer row (T): recipes/keyword_transformer.yaml with a 1,000-id vocabulary and dim 64, so the
    weights (not the graph's fixed overhead) dominate the dense float file the size target is read against."""
    return {"transformer": ("keyword_transformer.yaml",
                            ["data.vocab=1000", "model.vocab=1000", "model.dim=64", "model.ffn=128"])}


ROWS.update(transformer_rows())


def run_row(name: str, seed: int, work: Path) -> dict[str, Any]:
    """Train one row at one seed; return its figures."""
    recipe, overrides = ROWS[name]
    out = work / f"{name}-{seed}"
    r = load_recipe(ROOT / "recipes" / recipe, [*overrides, f"seed={seed}", "sparsity.on_drop=warn",
                                                 f"output_dir={out / 'run'}", f"export.dir={out / 'bundle'}"])
    t0 = time.time()
    s = train(r, progress=False).summary
    info = json.loads((out / "bundle" / "export.json").read_text())
    chosen = next((c for c in info["candidates"] if c.get("chosen")), {})
    dense_acc, acc = s.baseline.metric, s.tflite.metric if s.tflite else None
    return {
        "row": name, "seed": seed, "dense_acc": dense_acc, "tflite_acc": acc,
        "delta_points": None if acc is None or dense_acc is None else 100 * (acc - dense_acc),
        "coverage": s.model.coverage if s.model else None,
        "sparsity": s.model.sparsity_pruned_kernels if s.model else None,
        "dense_bytes": info.get("dense", {}).get("bytes"), "bytes": info["model"]["bytes"],
        "ratio": info.get("ratio"), "quantization": info.get("quantization"),
        "latency_vs_dense": chosen.get("latency_ratio"),
        "rejected": [f"{c['label']}: {str(c.get('rejected'))[:120]}" for c in info["candidates"] if c.get("rejected")],
        "signature": info.get("signature"), "seconds": round(time.time() - t0, 1),
    }


def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgesparse-seq-") as tmp:
        for name in args.rows.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                row = run_row(name, seed, Path(tmp))
                rows.append(row)
                print(f"{row['row']:5s} seed {seed}: dense {_fmt(row['dense_acc'], '.2%')} -> tflite "
                      f"{_fmt(row['tflite_acc'], '.2%')} ({_fmt(row['delta_points'], '+.2f')} pt), coverage "
                      f"{_fmt(row['coverage'], '.1%')}, {row['quantization']}, {row['bytes']:,} B vs dense "
                      f"{_fmt(row['dense_bytes'], ',')} B (1/{_fmt(row['ratio'], '.2f')}), latency "
                      f"{_fmt(row['latency_vs_dense'], '.2f')}x dense (paired), {row['seconds']} s", flush=True)
                for why in row["rejected"]:
                    print(f"      rejected {why}", flush=True)
    print("\nrow   | acc delta (pt) worst | coverage min | size ratio min | latency vs dense (median of seeds)")
    for name in args.rows.split(","):
        rs = [r for r in rows if r["row"] == name]
        deltas = [r["delta_points"] for r in rs if r["delta_points"] is not None]
        lat = sorted(r["latency_vs_dense"] for r in rs if r["latency_vs_dense"] is not None)
        print(f"{name:5s} | {_fmt(min(deltas) if deltas else None, '+.2f'):>20s} | "
              f"{_fmt(min((r['coverage'] or 0) for r in rs), '.1%'):>12s} | "
              f"1/{_fmt(min((r['ratio'] or 0) for r in rs), '.2f'):>12s} | "
              f"{_fmt(lat[len(lat) // 2] if lat else None, '.2f')}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
