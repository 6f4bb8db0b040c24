"""Does distilling from the dense model help the sparse fine-tune? (issue 9)

A small functional ResNet with BatchNorm and residual Adds is trained dense on the built-in
``shapes`` data (small, noisy images, so the dense model stays below 99%), then pruned to a high
sparsity with a fixed, small fine-tune budget, once with labels only and once with distillation
from the dense model (same schedule, optimizer, seed and data order). Accuracy is on the held-out
test split. Prints one row per seed and the mean.

    python benchmarks/distillation.py                       # 3 seeds, 85% sparsity, w 0.5, T 4
    python benchmarks/distillation.py --seeds 0 --sparsity 0.9 --weight 0.7
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse.data import load_dataset
from edgesparse.recipe import DistillationConfig, OptimizerConfig, SparsityConfig
from edgesparse.train import fit, sparsity


def resnet(input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> Any:
    """A functional ResNet: conv stem, 2 stages x 2 residual blocks (BN, Add), GAP, softmax."""
    keras = _tf.keras()
    layers = keras.layers
    inputs = keras.Input(input_shape, name="input")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9, name="stem_bn")(x))
    for stage, filters in enumerate((width, 2 * width)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage + 1}b{block + 1}"
            shortcut = x
            y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
            y = layers.ReLU()(layers.BatchNormalization(momentum=0.9, name=f"{name}_bn1")(y))
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
            y = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn2")(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(shortcut)
                shortcut = layers.BatchNormalization(momentum=0.9, name=f"{name}_proj_bn")(shortcut)
            x = layers.ReLU()(layers.Add(name=f"{name}_add")([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet_bn")


def one_seed(seed: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    data = load_dataset({"builtin": "shapes", "image_size": args.image_size, "num_classes": 8,
                         "samples_per_class": args.samples_per_class, "noise": args.noise,
                         "batch_size": 64}, seed)
    common = dict(batch_size=64, seed=seed, resume=False, data=data)
    _tf.set_seed(seed)
    dense = resnet(data.input_shape, data.num_classes)
    fit.run_phase("baseline", dense, epochs=args.dense_epochs, optimizer=OptimizerConfig(learning_rate=3e-3),
                  run_dir=work / f"s{seed}", history=fit.History(work / f"s{seed}" / "h.csv"), **common)
    dense_acc, _ = fit.evaluate(dense, data.x_test, data.y_test)
    steps = int(np.ceil(len(data.x_train) / 64))
    cfg = SparsityConfig(final=args.sparsity, start=0, end=max(1, round(args.finetune_epochs * 0.6)),
                         epochs=args.finetune_epochs, frequency=10, optimizer=OptimizerConfig(learning_rate=1e-3))
    plan = sparsity.plan_sparsity(dense, cfg, steps)
    out: dict[str, float] = {"dense": dense_acc}
    for label, kd in (("plain", None), ("distilled", DistillationConfig(weight=args.weight, temperature=args.temperature))):
        _tf.set_seed(seed)  # same initial shuffle order and dropout/seeded ops for both arms
        pruned = sparsity.apply_pruning(dense, cfg, plan)
        run_dir = work / f"s{seed}_{label}"
        t0 = time.perf_counter()
        fit.run_phase("sparsity", pruned, epochs=cfg.epochs, optimizer=cfg.optimizer, run_dir=run_dir,
                      history=fit.History(run_dir / "h.csv"),
                      extra_callbacks=[_tf.tfmot().sparsity.keras.UpdatePruningStep()],
                      teacher=dense if kd else None, distillation=kd, **common)
        final = sparsity.strip(pruned)
        out[label], _ = fit.evaluate(final, data.x_test, data.y_test)
        out[f"{label}_sparsity"] = sparsity.measure_sparsity(final, [lp.name for lp in plan.pruned])["overall"]
        out[f"{label}_seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sparsity", type=float, default=0.85)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--samples-per-class", type=int, default=200)
    ap.add_argument("--noise", type=float, default=0.25)
    ap.add_argument("--dense-epochs", type=int, default=25)
    ap.add_argument("--finetune-epochs", type=int, default=8)
    ap.add_argument("--weight", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=4.0)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            rows.append((seed, one_seed(seed, args, Path(tmp))))
            r = rows[-1][1]
            print(f"seed {seed}: dense {r['dense']:.2%}, plain {r['plain']:.2%}, distilled {r['distilled']:.2%}",
                  flush=True)
    print(f"\nResNet-BN on shapes {args.image_size}x{args.image_size}, 8 classes, noise {args.noise}, "
          f"{args.samples_per_class}/class; {args.sparsity:.0%} sparsity, {args.finetune_epochs} fine-tune epochs, "
          f"distillation weight {args.weight}, T {args.temperature}; test split accuracy\n")
    print("| seed | dense | sparse, labels only | sparse, distilled | distilled - plain | achieved sparsity |")
    print("|---|---|---|---|---|---|")
    for seed, r in rows:
        print(f"| {seed} | {r['dense']:.2%} | {r['plain']:.2%} | {r['distilled']:.2%} | "
              f"{(r['distilled'] - r['plain']) * 100:+.2f} pt | {r['plain_sparsity']:.2%} / {r['distilled_sparsity']:.2%} |")
    mean = {k: float(np.mean([r[k] for _, r in rows])) for k in ("dense", "plain", "distilled")}
    std = {k: float(np.std([r[k] for _, r in rows])) for k in ("dense", "plain", "distilled")}
    print(f"| mean | {mean['dense']:.2%} ± {std['dense'] * 100:.2f} | {mean['plain']:.2%} ± {std['plain'] * 100:.2f} | "
          f"{mean['distilled']:.2%} ± {std['distilled'] * 100:.2f} | {(mean['distilled'] - mean['plain']) * 100:+.2f} pt | |")
    secs = [(r["plain_seconds"], r["distilled_seconds"]) for _, r in rows]
    print(f"\nfine-tune time per arm (mean): labels only {np.mean([a for a, _ in secs]):.1f} s, "
          f"distilled {np.mean([b for _, b in secs]):.1f} s; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
