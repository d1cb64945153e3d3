#!/usr/bin/env python3
"""Tables of a replication experiment from its evaluation files.

  summarize.py [--full] RESULTS_DIR MODEL:LABEL ...

RESULTS_DIR holds NAME.eval.json (`chainlm eval ppl --json` of every sub-model of a run) and
NAME.metrics.jsonl (its training log). A MODEL is a run name without its seed suffix: the runs
MODEL-s1, MODEL-s2, ... are its seeds, and the table gives, per model and sub-model, the mean
validation loss over the seeds with its spread (max - min), the parameters, the tokens trained
on and the training FLOPs. --full: only each model's full model (for runs trained on its loss
alone, whose smaller sub-models were never trained). Written to RESULTS_DIR/results.md and
printed.
"""
import glob
import json
import os
import sys


def load_run(results, name):
    paths = [os.path.join(results, name + ext) for ext in (".eval.json", ".metrics.jsonl")]
    for path in paths:  # a message, not a traceback (a user trial)
        if not os.path.isfile(path):
            sys.exit(f"summarize: {path} is missing: each run needs its evaluation and its "
                     f"training log in {results} (the claim's script writes both)")
    with open(paths[0]) as f:
        ev = json.load(f)
    tokens = flops = 0
    with open(paths[1]) as f:
        for line in f:
            m = json.loads(line)
            if "tokens" in m and "flops" in m:
                tokens, flops = m["tokens"], m["flops"]
    return ev, tokens, flops


def main():
    args = sys.argv[1:]
    full_only = bool(args) and args[0] == "--full"
    if full_only:
        args = args[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    results = args[0]
    rows = []
    for spec in args[1:]:
        model, _, label = spec.partition(":")
        label = label or model
        names = sorted(
            os.path.basename(p)[: -len(".eval.json")]
            for p in glob.glob(os.path.join(results, model + "-s*.eval.json"))
        )
        if not names:
            sys.exit(f"summarize: no evaluation of {model} (no {model}-s*.eval.json in {results})")
        runs = [load_run(results, n) for n in names]
        # Seeds trained for different lengths (a scaled-down rerun written beside committed
        # results) were averaged as one model, without a word.
        lengths = sorted({r[1] for r in runs})
        if len(lengths) > 1:
            sys.exit(f"summarize: the runs of {model} in {results} trained different token counts "
                     f"({', '.join(f'{n}: {r[1]}' for n, r in zip(names, runs))}); give each rerun "
                     "its own RESULTS (and RUNS) directory")
        n_chains = len(runs[0][0]["chains"])
        for k in range(n_chains - 1 if full_only else 0, n_chains):
            losses = [r[0]["chains"][k]["loss"] for r in runs]
            c = runs[0][0]["chains"][k]
            rows.append({
                "label": label if n_chains == 1 or full_only else f"{label}, k={c['k']}",
                "params": c["params"],
                "loss": sum(losses) / len(losses),
                "spread": max(losses) - min(losses),
                "seeds": len(losses),
                "tokens": runs[0][1],
                "flops": runs[0][2],
            })
    lines = [
        "| model | params | val loss (mean) | spread over seeds | seeds | tokens | training FLOPs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        spread = f"{r['spread']:.4f}" if r["seeds"] > 1 else "-"
        lines.append(
            f"| {r['label']} | {r['params'] / 1e6:.2f}M | {r['loss']:.4f} | {spread} | {r['seeds']} "
            f"| {r['tokens'] / 1e6:.2f}M | {r['flops']:.3g} |"
        )
    text = "\n".join(lines) + "\n"
    with open(os.path.join(results, "results.md"), "w") as f:
        f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
