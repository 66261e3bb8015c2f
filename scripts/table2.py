#!/usr/bin/env python3
"""Prints the paper's Table 2 (MNIST) and an FGSM table from the JSON files written by
scripts/paper-mnist.sh: `python3 scripts/table2.py results/paper-mnist`."""
import json
import pathlib
import sys

ROWS = [
    ("base", "No defense", "99.08%", "0.2067"),
    ("adversarial", "Adversarial Training", "99.03%", "0.2238"),
    ("input-gradient", "Input Gradient regularization", "99.25%", "0.2343"),
    ("input-gradient-at", "Input Gradient regularization & Adversarial Training", "98.88%", "0.2349"),
    ("jacobian", "Jacobian regularization (300 exact steps)", "98.44%", "0.3424"),
    ("projections-1200-cosine-300", "Jacobian regularization (1,200 + 300 cosine-decay steps, 1 projection)", "98.44%", "0.3424"),
    ("exact-recipe/recipe-s0", "Jacobian regularization (1,200 steps, exact penalty, 2-core CPU)", "98.44%", "0.3424"),
    ("gpu-exact-recipe/exact-gpu-s0", "Jacobian regularization (1,200 steps, exact penalty, `--device gpu` on an H200)", "98.44%", "0.3424"),
    ("gpu-exact-recipe/exact-gpu-s0-cosine", "Jacobian regularization (1,200 + 300 cosine-decay steps, exact penalty, `--device gpu` on an H200)", "98.44%", "0.3424"),
    ("jacobian-at", "Jacobian regularization & Adversarial Training", "98%", "0.3629"),
]


# Rows made by more than one `certify harden` run: their wall time is the sum.
WALL_PARTS = {
    "projections-1200-cosine-300": ["projections-1200", "projections-1200-cosine-300"],
    "gpu-exact-recipe/exact-gpu-s0-cosine": ["gpu-exact-recipe/exact-gpu-s0", "gpu-exact-recipe/exact-gpu-s0-cosine"],
}


def last_json(path):
    lines = [l for l in path.read_text().splitlines() if l.strip().startswith("{")]
    return json.loads(lines[-1])


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "results/paper-mnist")
    base = None
    print("| defence | test accuracy (10,000) | ρ̂_adv (first 1,000) | × base | mean ‖J‖_F (first 1,000) | training wall time | paper: accuracy, ρ̂_adv |")
    print("|---|---|---|---|---|---|---|")
    fgsm_rows = []
    for key, name, pacc, prho in ROWS:
        full, first = out / f"{key}.eval10k.json", out / f"{key}.eval1k.json"
        if not full.exists() or not first.exists():
            continue
        a, b = last_json(full), last_json(first)
        rho = b["rho_adv"]
        if key == "base":
            base = rho
        trains = [out / f"{k}.train.json" for k in WALL_PARTS.get(key, [key])]
        wall = f"{sum(last_json(t)['wall_s'] for t in trains):.0f} s" if all(t.exists() for t in trains) else "-"
        ratio = f"{rho / base:.2f}×" if base else "-"
        print(f"| {name} | {100 * a['accuracy']:.2f}% | {rho:.4f} | {ratio} | {b['mean_jacobian_fro']:.3f} | {wall} | {pacc}, {prho} |")
        fgsm_rows.append((name, b["fgsm_accuracy"]))
    if fgsm_rows:
        eps = list(fgsm_rows[0][1].keys())
        print()
        print("| defence | " + " | ".join(f"FGSM ε = {e}" for e in eps) + " |")
        print("|---|" + "---|" * len(eps))
        for name, acc in fgsm_rows:
            print(f"| {name} | " + " | ".join(f"{100 * acc[e]:.1f}%" for e in eps) + " |")


if __name__ == "__main__":
    main()
