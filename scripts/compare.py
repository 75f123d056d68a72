#!/usr/bin/python3
"""LAMB vs LARS vs Adam vs AdamW: one config, one data set, one seed, every optimizer, then pictures.

    scripts/compare.py CONFIG [--optimizers lamb,lars,adam,adamw] [--batch-sizes 256,1024,4096]
                      [--base-batch 256] [--lr lamb=1e-2,lars=...] [--lr-sweep 0.5,1,2]
                      [--epochs-steps N] [--evals 8] [--out runs/compare] [--set k=v ...]
                      [--bin ./bert_pretrain] [--dry-run] [--plot-only]

For every optimizer, batch size b and lr multiplier m it trains one run into
OUT/<optimizer>_b<b>_lr<lr>, with

    lr(b)    = lr_base[optimizer] * m * sqrt(b / base_batch)   square-root scaling, as the paper
    steps(b) = N * base_batch / b                              fixed epochs: every run sees the
                                                               same number of examples

and the config's own warmup_ratio (so warmup scales with the steps). Everything else (data, seed,
model, schedule shape) comes from CONFIG and the --set overrides, which are passed to every run after
the script's own, so they win. Each run goes through `--resume auto`: an interrupted comparison
(Ctrl-C, a crash, a reboot) continues where it stopped when the same command runs again, and a run
that finished, diverged or failed is not run again (delete its directory to redo it).

Then it writes into OUT:
    loss.png          training loss (smoothed) and eval MLM accuracy against step and against
                      examples seen; one colour per optimizer, one line style per batch size
    trust_ratios.png  LAMB and LARS trust ratios per layer group over training
    results.md        the table: final eval MLM loss/accuracy, NSP accuracy, diverged, wall time,
                      the best lr per optimizer and batch marked
    results.json      the same numbers for other scripts

Exit status: 0 when every run finished or diverged (a divergence is a result, not an error), 1 when
a run failed otherwise, 2 on a usage or config error (checked with --dry-run for every run before
anything trains), 130 when interrupted.

Python 3 standard library + matplotlib; when matplotlib is missing, Debian's python3-matplotlib is
installed through scripts/install-deps.sh (apt-get as root, sudo otherwise).
"""
import argparse
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The optimizers as the LAMB paper ran them: BERT's AdamW (AdamWeightDecay) has no bias correction,
# LARS in the paper's form (its Alg. 1) and in the classic form (You et al. 2017).
VARIANTS = {
    "lamb": ["optimizer.name=lamb"],
    "adamw": ["optimizer.name=adamw", "optimizer.bias_correction=false"],
    "lars": ["optimizer.name=lars", "optimizer.lars_form=paper"],
    "lars-classic": ["optimizer.name=lars", "optimizer.lars_form=classic"],
    "adam": ["optimizer.name=adam"],
    "adamw-bc": ["optimizer.name=adamw", "optimizer.bias_correction=true"],
}
OPTIMIZERS = tuple(VARIANTS)
DEFAULT_OPTIMIZERS = ("lamb", "adamw", "lars", "lars-classic", "adam")
# Centres of the lr grids at the base batch (256) for the demo model; only where each grid starts:
# the grid is extended until its best lr is interior. LAMB and LARS scale each layer's step to
# lr * ||x||, so their lr is a relative step size; Adam's and AdamW's is an absolute one per
# coordinate; classic LARS multiplies eta * ||x|| / ||g|| by it, like an SGD lr.
DEFAULT_LR = {"lamb": 4e-2, "adamw": 4e-3, "lars": 8e-2, "lars-classic": 4.0, "adam": 8e-3,
              "adamw-bc": 4e-3}
COLOURS = {"lamb": "tab:blue", "lars": "tab:orange", "adam": "tab:green", "adamw": "tab:red",
           "lars-classic": "tab:brown", "adamw-bc": "tab:purple"}
LABELS = {"lamb": "LAMB", "lars": "LARS (paper)", "lars-classic": "LARS (classic)", "adam": "Adam",
          "adamw": "AdamW (no bias corr.)", "adamw-bc": "AdamW (bias corr.)"}
STYLES = ["-", "--", ":", "-."]
STATUS_FILE = "compare.json"
EXIT_DIVERGED = 3  # bert_pretrain's exit status when the loss or the gradients became non-finite


def die(msg, status=2):
    print("compare: " + msg, file=sys.stderr)
    sys.exit(status)


# ---------------------------------------------------------------------------------------- options

def parse_list(text, conv, what):
    try:
        items = [conv(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        die("%s: cannot read '%s' as a comma-separated list" % (what, text))
    if not items:
        die("%s: empty list" % what)
    return items


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="scripts/compare.py",
        description="Tune and compare LAMB, AdamW, LARS and Adam on one config at several global "
                    "batch sizes with a fixed number of examples; `scripts/compare.py split ...` "
                    "splits a corpus by document into train/valid/test.")
    p.add_argument("config", help="the YAML config every run starts from (its data.eval: the "
                                  "set the results are reported on)")
    p.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS),
                   help="comma-separated subset of %s (default %s)"
                        % (",".join(OPTIMIZERS), ",".join(DEFAULT_OPTIMIZERS)))
    p.add_argument("--batch-sizes", default="256,1024,4096", help="global batch sizes")
    p.add_argument("--base-batch", type=int, default=256,
                   help="the batch that --lr and --epochs-steps refer to (default 256)")
    p.add_argument("--lr", default="",
                   help="centre of each optimizer's lr grid at the base batch, e.g. lamb=1e-2 "
                        "(default %s)" % ",".join("%s=%g" % kv for kv in DEFAULT_LR.items()))
    p.add_argument("--grid", default="0.5,1,2",
                   help="lr multipliers of the first grid, around the centre (default 0.5,1,2)")
    p.add_argument("--max-extend", type=int, default=3,
                   help="grid points added at most per optimizer and batch while the best lr is at "
                        "an edge of the grid (a factor 2 beyond it each; default 3)")
    p.add_argument("--valid", default="",
                   help="the validation shard the tuning runs evaluate on (required when the grid "
                        "has more than one point; must not be the config's data.eval)")
    p.add_argument("--seeds", default="1,2,3",
                   help="training.seed of the final runs at each chosen lr (default 1,2,3)")
    p.add_argument("--tune-seed", type=int, default=0,
                   help="training.seed of the tuning runs (default 0, none of the final seeds)")
    p.add_argument("--sqrt-scaled", default="",
                   help="optimizers tuned at the base batch only, the other batches taking the best "
                        "lr there times sqrt(b / base), as the paper ran LAMB (default: none, every "
                        "optimizer tuned at every batch)")
    p.add_argument("--warmup", choices=("steps", "ratio"), default="steps",
                   help="steps: the same number of warmup steps at every batch size, as the paper's "
                        "table (default); ratio: the config's warmup_ratio of each run's steps")
    p.add_argument("--warmup-steps", type=int, default=-1,
                   help="--warmup steps: how many (default: the config's warmup at the base batch)")
    p.add_argument("--epochs-steps", type=int, default=0,
                   help="optimizer steps at the base batch; batch b runs N*base/b steps (default: "
                        "as many examples as the config's own phases)")
    p.add_argument("--evals", type=int, default=8,
                   help="evaluations per run (training.eval_every = steps / evals; default 8)")
    p.add_argument("--out", default="runs/compare",
                   help="results: per-run metrics, the table, the plots; small files, meant to be "
                        "committed so that a study continues from them (default runs/compare)")
    p.add_argument("--work", default="",
                   help="the trainers' run dirs with their checkpoints (default OUT-work)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="config override passed to every run (repeatable)")
    p.add_argument("--bin", default=os.path.join(ROOT, "bert_pretrain"),
                   help="the bert_pretrain binary (default ./bert_pretrain)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the first runs' configs and print their commands; train nothing")
    p.add_argument("--plot-only", action="store_true",
                   help="train nothing; redraw the plots and the table from the runs in OUT")
    p.add_argument("--sweep-at", choices=("all", "base"), default="all",
                   help="base: the same as --sqrt-scaled with every optimizer")
    p.add_argument("--jobs", type=int, default=1,
                   help="run this many (optimizer, batch) groups at once, each in its own process "
                        "(give each trainer a share of the cores: --set training.threads=...)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)  # K/N: one of --jobs' processes
    a = p.parse_args(argv)
    if a.jobs < 1:
        die("--jobs must be at least 1")
    a.worker_of = None
    if a.worker:
        k, _, n = a.worker.partition("/")
        a.worker_of = (int(k), int(n))

    a.optimizers = parse_list(a.optimizers, str, "--optimizers")
    for o in a.optimizers:
        if o not in OPTIMIZERS:
            die("--optimizers: unknown optimizer '%s' (choose from %s)" % (o, ",".join(OPTIMIZERS)))
    if len(set(a.optimizers)) != len(a.optimizers):
        die("--optimizers: an optimizer is named twice")
    a.batch_sizes = sorted(set(parse_list(a.batch_sizes, int, "--batch-sizes")))
    if a.batch_sizes[0] < 1 or a.base_batch < 1:
        die("batch sizes must be positive")
    a.grid = sorted(parse_list(a.grid, float, "--grid"))
    if any(not (m > 0 and math.isfinite(m)) for m in a.grid) or len(set(a.grid)) != len(a.grid):
        die("--grid: multipliers must be positive and distinct")
    a.seeds = parse_list(a.seeds, int, "--seeds")
    if len(set(a.seeds)) != len(a.seeds) or min(a.seeds) < 0:
        die("--seeds: seeds must be distinct and >= 0")
    a.sqrt_scaled = (list(a.optimizers) if a.sweep_at == "base" else
                     parse_list(a.sqrt_scaled, str, "--sqrt-scaled") if a.sqrt_scaled else [])
    for o in a.sqrt_scaled:
        if o not in a.optimizers:
            die("--sqrt-scaled: '%s' is not one of --optimizers" % o)
    if a.sqrt_scaled and a.base_batch not in a.batch_sizes:
        die("--sqrt-scaled/--sweep-at base: the base batch %d must be one of --batch-sizes"
            % a.base_batch)
    a.lr_base = dict(DEFAULT_LR)
    for item in parse_list(a.lr, str, "--lr") if a.lr else []:
        name, sep, value = item.partition("=")
        if not sep or name not in OPTIMIZERS:
            die("--lr: expected OPTIMIZER=LR with OPTIMIZER one of %s, got '%s'"
                % (",".join(OPTIMIZERS), item))
        try:
            a.lr_base[name] = float(value)
        except ValueError:
            die("--lr: '%s' is not a number" % value)
        if not (a.lr_base[name] > 0 and math.isfinite(a.lr_base[name])):
            die("--lr: %s must be positive" % item)
    if a.epochs_steps < 0 or a.evals < 1 or a.max_extend < 0:
        die("--epochs-steps and --max-extend must be >= 0 and --evals >= 1")
    for s in a.sets:
        if "=" not in s:
            die("--set: expected section.key=value, got '%s'" % s)
        key = s.split("=", 1)[0].strip()
        if key in ("optimizer.name", "schedule.lr", "training.run_dir", "training.seed",
                   "data.eval", "schedule.warmup_steps") or re.fullmatch(
                r"phases\.\d+\.(batch_size|steps)", key):
            die("--set %s: the comparison sets this for each run (use --optimizers, --lr, "
                "--batch-sizes, --epochs-steps, --seeds, --valid, --warmup-steps, --out)" % key)
    if not os.path.isfile(a.config):
        die("config %s: no such file" % a.config)
    if len(a.grid) > 1 and not a.valid:
        die("tuning needs a validation shard that is not the evaluation set: --valid PATH "
            "(`scripts/compare.py split` and docs/comparison.md show how to make one)")
    a.valid = os.path.abspath(a.valid) if a.valid else ""
    a.out = os.path.abspath(a.out)
    a.work = os.path.abspath(a.work) if a.work else a.out + "-work"
    return a


# ----------------------------------------------------------------------------- the trainer's dry run

PHASE_RE = re.compile(r"^(\d+)\s+(\d+)\s+(\d+) = (\d+) x (\d+) x (\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+"
                      r"(\S+)\s+(\S+)")


def dry_run(binary, config, sets):
    """Runs `bert_pretrain CONFIG --set ... --dry-run`; returns {"phases": [{seq_len, batch, micro,
    steps, warmup (None when the phase continues a schedule segment)}], "cfg": the resolved config}
    from the JSON it prints (the phases, failing that, from its summary table), or exits 2 with the
    trainer's message."""
    cmd = [binary, config] + [x for s in sets for x in ("--set", s)] + ["--dry-run"]
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True)
    except OSError as e:
        die("cannot run %s: %s (HINT: build it with `make`)" % (binary, e))
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        die("the config does not check out (exit %d): %s" % (r.returncode, shlex.join(cmd)))
    phases = []
    cfg = {}
    try:
        cfg = json.loads(r.stdout)
        micro = int(cfg["training"]["micro_batch"])
        for p in cfg["phases"]:
            starts = p.get("segment_start") == p.get("first_step")
            phases.append({"seq_len": int(p["seq_len"]), "batch": int(p["batch_size"]),
                           "micro": micro, "steps": int(p["steps"]),
                           "warmup": int(p["segment_warmup"]) if starts else None})
    except (ValueError, KeyError, TypeError):
        phases = []
        for line in (r.stdout + "\n" + r.stderr).splitlines():
            m = PHASE_RE.match(line.strip())
            if m:
                warm = m.group(11)
                phases.append({"seq_len": int(m.group(2)), "batch": int(m.group(3)),
                               "micro": int(m.group(4)), "steps": int(m.group(7)),
                               "warmup": int(warm) if warm.isdigit() else None})
    if not phases:
        die("could not read the phases from the output of: %s" % shlex.join(cmd))
    return {"phases": phases, "cfg": cfg if isinstance(cfg, dict) else {}}


# ------------------------------------------------------------------------------ the three-way split

def split_documents(argv):
    """`compare.py split TEXT OUTDIR [--valid F] [--test F] [--seed S]`: the documents of TEXT (blank
    line between documents) into OUTDIR/train.txt, valid.txt and test.txt. A document goes by a hash
    of (seed, its index), so the split does not depend on the order of the others, and a document
    is in exactly one file."""
    p = argparse.ArgumentParser(prog="scripts/compare.py split")
    p.add_argument("text")
    p.add_argument("outdir")
    p.add_argument("--valid", type=float, default=0.1, help="share of documents for tuning")
    p.add_argument("--test", type=float, default=0.1, help="share of documents for the results")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    if not (0 < a.valid and 0 < a.test and a.valid + a.test < 1):
        die("split: --valid and --test must be positive with a sum below 1")
    try:
        with open(a.text, encoding="utf-8") as f:
            docs = [d for d in re.split(r"\n[ \t\r]*\n", f.read()) if d.strip()]
    except (OSError, UnicodeDecodeError) as e:
        die("split: %s: %s" % (a.text, e))
    import hashlib
    parts = {"train": [], "valid": [], "test": []}
    for i, d in enumerate(docs):
        h = hashlib.sha256(b"%d:%d" % (a.seed, i)).digest()
        u = int.from_bytes(h[:8], "little") / 2.0 ** 64
        parts["test" if u < a.test else "valid" if u < a.test + a.valid else "train"].append(d)
    if not all(parts.values()):
        die("split: %d documents leave a part empty (%s)" % (
            len(docs), ", ".join("%s %d" % (k, len(v)) for k, v in parts.items())))
    os.makedirs(a.outdir, exist_ok=True)
    for k, v in parts.items():
        with open(os.path.join(a.outdir, k + ".txt"), "w", encoding="utf-8") as f:
            f.write("\n\n".join(x.strip("\n") for x in v) + "\n")
    print("split: %s" % ", ".join("%s %d documents" % (k, len(v)) for k, v in parts.items()))
    return 0


# -------------------------------------------------------------------------------------- the plan

def fmt_lr(lr):
    return "%.3g" % lr


def schedule_plan(a, base):
    """(steps per phase at each batch, total examples, warmup steps or None for the ratio rule)."""
    cfg_examples = [p["steps"] * p["batch"] for p in base["phases"]]
    total_examples = a.epochs_steps * a.base_batch if a.epochs_steps else sum(cfg_examples)
    steps = {}
    for b in a.batch_sizes:
        # the config's split of examples between phases, scaled to the total asked for
        steps[b] = [max(1, int(round(ex * total_examples / sum(cfg_examples) / b)))
                    for ex in cfg_examples]
    warmup = None
    if a.warmup == "steps":
        warmup = a.warmup_steps
        if warmup < 0:
            sched = base["cfg"].get("schedule", {})
            base_steps = total_examples // a.base_batch
            if isinstance(sched.get("warmup_steps"), int) and sched["warmup_steps"] >= 0:
                warmup = sched["warmup_steps"]
            else:
                # the config's warmup at the base batch, rounded half up as the trainer does
                warmup = int(math.floor(float(sched.get("warmup_ratio", 0.01)) * base_steps + 0.5))
        for b in a.batch_sizes:
            if warmup >= sum(steps[b]):
                die("%d warmup steps at every batch size leave batch %d (%d steps) no decay: "
                    "lower --warmup-steps, give more --epochs-steps, or use --warmup ratio"
                    % (warmup, b, sum(steps[b])))
    return steps, total_examples, warmup


def make_run(a, plan, opt, b, lr, seed, stage):
    """One run: its name, its dirs (results in OUT, checkpoints in WORK) and its --set overrides."""
    steps, _, warmup = plan
    name = "%s_b%d_lr%s" % (opt, b, fmt_lr(lr)) + ("_s%d" % seed if stage == "final" else "")
    rel = os.path.join(stage, name)
    total = sum(steps[b])
    sets = VARIANTS[opt] + ["schedule.lr=%.6g" % lr, "training.seed=%d" % seed,
                            # relative to the working directory: the recorded settings name no
                            # machine path
                            "training.run_dir=%s" % os.path.relpath(os.path.join(a.work, rel)),
                            "training.eval_every=%d" % max(1, total // a.evals),
                            "training.trust_ratio_every=%d" % max(1, total // 10),
                            "training.checkpoint_every=%d" % max(1, total // 5)]
    if stage == "tune":
        sets.append("data.eval=%s" % os.path.relpath(a.valid))
    if warmup is not None:
        sets.append("schedule.warmup_steps=%d" % warmup)
    for i, n in enumerate(steps[b]):
        sets += ["phases.%d.batch_size=%d" % (i, b), "phases.%d.steps=%d" % (i, n)]
    sets += a.sets
    micro = a.micro
    mb = math.gcd(b, min(micro, b))
    if mb != micro:
        # after the user's: a micro-batch that does not divide this batch cannot run
        sets.append("training.micro_batch=%d" % mb)
    return {"name": name, "rel": rel, "dir": os.path.join(a.out, rel),
            "work": os.path.join(a.work, rel), "optimizer": opt, "batch": b, "lr": lr,
            "seed": seed, "stage": stage, "steps": total, "examples": total * b, "sets": sets}


def batch_order(a):
    """The base batch first (the sqrt-scaled optimizers need its tuned lr), then the others."""
    return ([a.base_batch] if a.base_batch in a.batch_sizes else []) + [
        b for b in a.batch_sizes if b != a.base_batch]


def score(r):
    """Final eval MLM loss of a finished run; +inf for a divergence; None when it has none."""
    if r["state"] == "diverged":
        return float("inf")
    f = r.get("final")
    if f is not None and finite(f.get("eval_mlm_loss")):
        return f["eval_mlm_loss"]
    return None


def next_multiplier(a, mults, runs):
    """The grid point to add (a factor 2 beyond the edge where the best lr is), or None when the
    best is interior, the extensions are spent, or a run has no score (failed or unfinished)."""
    scores = [score(r) for r in runs]
    if any(x is None for x in scores) or len(mults) - len(a.grid) >= a.max_extend:
        return None
    best = min(range(len(runs)), key=lambda k: (scores[k], k))
    if math.isinf(scores[best]):
        return min(mults) / 2  # every lr diverged: go lower
    if len(mults) > 1 and runs[best]["mult"] == max(mults):
        return max(mults) * 2
    if len(mults) > 1 and runs[best]["mult"] == min(mults):
        return min(mults) / 2
    return None


def tune_group(a, plan, opt, b, step, centre):
    """Tunes one (optimizer, batch): the grid around centre, extended while its best lr sits at an
    edge. step(run) trains a run (or only records it) and returns False to stop. Returns (runs,
    best run or None, stopped)."""
    mults = list(a.grid)
    while True:
        runs = []
        for m in sorted(mults):
            r = make_run(a, plan, opt, b, centre * m, a.tune_seed, "tune")
            r["mult"] = m
            runs.append(r)
            if not step(r):
                return runs, None, True
        collect(runs)
        nxt = next_multiplier(a, mults, runs)
        if nxt is None:
            break
        mults.append(nxt)
    scored = [r for r in runs if score(r) is not None and math.isfinite(score(r))]
    best = min(scored, key=score) if scored else None
    if best is not None:
        best["best"] = True
    return runs, best, False


def group_key(a, opt, b):
    """Which --jobs worker a group belongs to: a sqrt-scaled optimizer's batches all go to one (they
    need its base-batch lr), every other (optimizer, batch) is a group of its own."""
    return ("sqrt", opt) if opt in a.sqrt_scaled else (opt, b)


def mine(a, opt, b):
    """Whether this process runs the group: always, unless it is worker K of N (--jobs), which runs
    every N-th group key in the study's order starting at K."""
    if a.worker_of is None:
        return True
    keys = []
    for bb in batch_order(a):
        for o in a.optimizers:
            if group_key(a, o, bb) not in keys:
                keys.append(group_key(a, o, bb))
    k, n = a.worker_of
    return keys.index(group_key(a, opt, b)) % n == k


def study(a, plan, step):
    """The whole protocol, batch by batch: each optimizer tuned on the validation shard (or, when
    sqrt-scaled, its base-batch lr times sqrt(b / base)), then trained with every final seed at the
    chosen lr and evaluated on the config's data.eval. Returns (runs, stopped)."""
    everything, chosen = [], {}
    for b in batch_order(a):
        for opt in a.optimizers:
            if not mine(a, opt, b):
                continue
            centre = a.lr_base[opt] * math.sqrt(b / a.base_batch)
            if len(a.grid) == 1:
                lr = centre * a.grid[0]
            elif opt in a.sqrt_scaled and b != a.base_batch:
                base_lr = chosen.get((opt, a.base_batch))
                if base_lr is None:
                    continue
                lr = base_lr * math.sqrt(b / a.base_batch)
            else:
                runs, best, stopped = tune_group(a, plan, opt, b, step, centre)
                everything += runs
                if stopped:
                    return everything, True
                if best is None:
                    continue
                lr = best["lr"]
            chosen[(opt, b)] = lr
            for seed in a.seeds:
                r = make_run(a, plan, opt, b, lr, seed, "final")
                r["sqrt_scaled"] = opt in a.sqrt_scaled and b != a.base_batch
                everything.append(r)
                if not step(r):
                    return everything, True
    return everything, False


# ------------------------------------------------------------------------------------- run records

def read_metrics(run_dir):
    """(steps, evals, trusts) from RUN/metrics.jsonl; a torn last line (a killed run) is skipped."""
    steps, evals, trusts = [], [], []
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return steps, evals, trusts
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if not isinstance(r, dict):
                continue
            kind = r.get("type")
            if kind == "step":
                steps.append(r)
            elif kind == "eval":
                evals.append(r)
            elif kind == "trust" or "trust_ratio" in r:
                trusts.append(r)
    return steps, evals, trusts


def read_status(run_dir):
    try:
        with open(os.path.join(run_dir, STATUS_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_status(run_dir, status):
    tmp = os.path.join(run_dir, STATUS_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(status, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(run_dir, STATUS_FILE))


def finished_in_metrics(run, steps, evals):
    """A run is done when its last step and the eval at that step are logged."""
    return (any(s.get("step") == run["steps"] for s in steps)
            and any(e.get("step") == run["steps"] for e in evals))


# ------------------------------------------------------------------------------------ running runs

class Interrupt:
    """SIGINT/SIGTERM while a run trains: passed on to the trainer (which finishes its step, writes a
    checkpoint and exits 0); the comparison then stops after that run."""

    def __init__(self):
        self.child = None
        self.signum = 0
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum, frame):
        self.signum = signum
        if self.child is not None and self.child.poll() is None:
            try:
                self.child.send_signal(signum)
            except OSError:
                pass
        else:
            raise KeyboardInterrupt


def portable_sets(sets):
    return [x for x in sets if not x.startswith(("training.run_dir=", "data.eval="))]


def keep_metrics(run):
    """Copies the trainer's metrics.jsonl from the work dir into OUT (the part that is kept)."""
    src = os.path.join(run["work"], "metrics.jsonl")
    if os.path.exists(src):
        tmp = os.path.join(run["dir"], "metrics.jsonl.tmp")
        with open(src, "rb") as f, open(tmp, "wb") as g:
            g.write(f.read())
        os.replace(tmp, os.path.join(run["dir"], "metrics.jsonl"))


def train(run, a, intr):
    """Trains (or resumes) one run; returns its state: finished, diverged, failed, interrupted."""
    os.makedirs(run["dir"], exist_ok=True)
    os.makedirs(run["work"], exist_ok=True)
    status = read_status(run["dir"])
    # the run dir name holds the optimizer, batch and lr, not the steps or the --set options; the
    # paths (run dir, validation shard) may differ between checkouts of committed results
    old, new = portable_sets(status.get("sets", [])), portable_sets(run["sets"])
    if "sets" in status and old != new:
        die("%s was trained with other settings (%s); use another --out or delete that directory"
            % (run["dir"], " ".join(x for x in old if x not in new) or "in another order"))
    if status.get("state") in ("finished", "diverged", "failed"):
        print("== %s: %s before, not run again" % (run["name"], status["state"]), flush=True)
        return status["state"]
    steps, evals, _ = read_metrics(run["dir"])
    if finished_in_metrics(run, steps, evals):
        status.update(state="finished")
        write_status(run["dir"], status)
        print("== %s: already finished" % run["name"], flush=True)
        return "finished"
    cmd = [a.bin, a.config] + [x for s in run["sets"] for x in ("--set", s)] + ["--resume", "auto"]
    print("== %s (%d steps at batch %d, lr %s)" % (run["name"], run["steps"], run["batch"],
                                                    fmt_lr(run["lr"])), flush=True)
    print("+ " + shlex.join(cmd), flush=True)
    t0 = time.monotonic()
    tail = []
    with open(os.path.join(run["work"], "train.log"), "a") as log:
        log.write("+ %s\n" % shlex.join(cmd))
        log.flush()
        # Its own session: a Ctrl-C reaches the trainer once, through Interrupt, not twice.
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        intr.child = child
        for raw in iter(child.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
            tail = (tail + [line])[-200:]
        rc = child.wait()
        intr.child = None
    wall = time.monotonic() - t0
    keep_metrics(run)
    steps, evals, _ = read_metrics(run["dir"])
    status = read_status(run["dir"])
    status["wall_s"] = status.get("wall_s", 0.0) + wall
    status["rc"] = rc
    status["command"] = shlex.join([os.path.relpath(cmd[0])] + cmd[1:])
    status["sets"] = run["sets"]
    if rc == 0 and finished_in_metrics(run, steps, evals):
        state = "finished"
    elif rc == 0 or intr.signum:
        state = "interrupted"
    elif rc == EXIT_DIVERGED:
        state = "diverged"
        status["diverged_at"] = steps[-1]["step"] + 1 if steps else 1
    elif rc == 2:
        sys.stdout.write("".join(tail[-20:]))
        die("%s: the trainer refused the config (exit 2)" % run["name"])
    else:
        state = "failed"
        print("== %s: exit status %d; last lines of its output are in %s"
              % (run["name"], rc, os.path.join(run["work"], "train.log")), flush=True)
    status["state"] = state
    write_status(run["dir"], status)
    print("== %s: %s after %.0f s" % (run["name"], state, wall), flush=True)
    return state


# ------------------------------------------------------------------------------------------ results

def final_eval(run, evals):
    last = [e for e in evals if e.get("step") == run["steps"]]
    return last[-1] if last else None


def collect(runs):
    """Each run with its metrics, state, final eval and wall time (from OUT)."""
    for r in runs:
        steps, evals, trusts = read_metrics(r["dir"])
        status = read_status(r["dir"])
        r["step_records"], r["evals"], r["trusts"] = steps, evals, trusts
        state = status.get("state")
        if state is None:
            state = "finished" if finished_in_metrics(r, steps, evals) else (
                "not started" if not steps else "unfinished")
        r["state"] = state
        r["diverged_at"] = status.get("diverged_at")
        r["final"] = final_eval(r, evals) if state == "finished" else None
        wall = status.get("wall_s")
        if wall is None and steps:
            wall = steps[-1].get("elapsed_s")
        r["wall_s"] = wall
        r.setdefault("best", False)
    return runs


def fmt_num(x, spec):
    return spec % x if isinstance(x, (int, float)) and math.isfinite(x) else "—"


def fmt_pct(x):
    return "%.1f%%" % (100 * x) if isinstance(x, (int, float)) and math.isfinite(x) else "—"


def fmt_time(s):
    if not isinstance(s, (int, float)):
        return "—"
    return "%dm %02ds" % (s // 60, s % 60) if s >= 60 else "%.0fs" % s


def diverged_cell(r):
    if r["state"] == "diverged":
        return "yes (step %s)" % r["diverged_at"] if r["diverged_at"] else "yes"
    if r["state"] == "finished":
        return "no"
    return r["state"]


def majority_acc(runs):
    """The trainer's most-frequent-token baseline for eval MLM accuracy, when it logs one."""
    for r in runs:
        for e in r["evals"]:
            if finite(e.get("eval_mlm_majority_acc")):
                return e["eval_mlm_majority_acc"]
    return None


def spread(values):
    """(mean, sample standard deviation or None with one value, min, max) of a non-empty list."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, sd, min(values), max(values)


def fmt_spread(values, scale, spec):
    if not values:
        return "—"
    mean, sd, lo, hi = spread([scale * v for v in values])
    text = spec % mean
    if sd is not None:
        text += " ± " + spec % sd + " [" + spec % lo + ", " + spec % hi + "]"
    return text


def final_cells(a, runs):
    """{(optimizer, batch): summary of its final runs}: lr, seeds finished and diverged, test loss
    and accuracy as mean ± sd [min, max]."""
    out = {}
    for r in runs:
        if r["stage"] == "final":
            out.setdefault((r["optimizer"], r["batch"]), []).append(r)
    cells = {}
    for key, group in out.items():
        done = [r for r in group if r["final"] is not None]
        cells[key] = {
            "lr": group[0]["lr"], "sqrt_scaled": group[0].get("sqrt_scaled", False),
            "seeds": len(group), "finished": len(done),
            "diverged": sum(r["state"] == "diverged" for r in group),
            "loss": [r["final"]["eval_mlm_loss"] for r in done if finite(r["final"].get("eval_mlm_loss"))],
            "acc": [r["final"]["eval_mlm_acc"] for r in done if finite(r["final"].get("eval_mlm_acc"))]}
    return cells


def write_results(a, plan, runs, cmdline):
    steps, examples, warmup = plan
    label = lambda o: LABELS.get(o, o)
    L = ["# Optimizer comparison", "",
         "Config `%s`; every run sees %d examples (steps = %d x %d / batch); warmup %s; lr tuned "
         "%s on the validation shard `%s` (grid x%s around a centre, extended by factors of 2 "
         "while the best lr is at an edge, at most %d points more), tuning seed %d; final runs at "
         "the chosen lr with seeds %s, evaluated on the config's `data.eval`."
         % (os.path.relpath(a.config, ROOT), examples, examples // a.base_batch, a.base_batch,
            "%d steps at every batch size" % warmup if warmup is not None
            else "the config's warmup_ratio of each run's steps",
            "at every batch size" + ("" if not a.sqrt_scaled else
                                     " (%s: at batch %d only, then x sqrt(b / %d))"
                                     % (", ".join(a.sqrt_scaled), a.base_batch, a.base_batch)),
            os.path.basename(a.valid) if a.valid else "none", ", x".join("%g" % m for m in a.grid),
            a.max_extend, a.tune_seed, ", ".join(map(str, a.seeds))), "",
         "Reproduce (and continue): `%s`" % cmdline, ""]
    cells = final_cells(a, runs)
    L += ["## Results on the evaluation set (final runs)", "",
          "Eval MLM loss and accuracy: mean ± sample sd [min, max] over the seeds that finished.", "",
          "| optimizer | batch | lr | seeds (finished / diverged) | eval MLM loss | eval MLM acc |",
          "|---|---:|---:|---|---:|---:|"]
    for b in a.batch_sizes:
        for o in a.optimizers:
            c = cells.get((o, b))
            if c is None:
                tuned = [r for r in runs if r["stage"] == "tune" and r["optimizer"] == o
                         and r["batch"] == b]
                why = ("every lr tried diverged" if tuned and all(r["state"] == "diverged"
                                                                  for r in tuned) else "not run yet")
                L.append("| %s | %d | — | %s | — | — |" % (label(o), b, why))
                continue
            L.append("| %s | %d | %s%s | %d (%d / %d) | %s | %s |" % (
                label(o), b, fmt_lr(c["lr"]), " (sqrt-scaled)" if c["sqrt_scaled"] else "",
                c["seeds"], c["finished"], c["diverged"], fmt_spread(c["loss"], 1, "%.3f"),
                fmt_spread(c["acc"], 100, "%.1f")))
    base = majority_acc(runs)
    if base is not None:
        L += ["", "Predicting the most frequent token everywhere scores %s MLM accuracy on the eval "
              "set; the uniform guess has loss ln(vocab)." % fmt_pct(base)]
    L += ["", "## Tuning (validation shard)", "",
          "| optimizer | batch | lrs tried: validation MLM loss (x = diverged) | chosen | interior |",
          "|---|---:|---|---:|---|"]
    groups = {}
    for r in runs:
        if r["stage"] == "tune":
            groups.setdefault((r["optimizer"], r["batch"]), []).append(r)
    for (o, b), group in sorted(groups.items(), key=lambda kv: (kv[0][1], a.optimizers.index(kv[0][0]))):
        group = sorted(group, key=lambda r: r["lr"])
        tried = ", ".join("%s: %s" % (fmt_lr(r["lr"]), "x" if r["state"] == "diverged" else
                                      fmt_num((r["final"] or {}).get("eval_mlm_loss"), "%.3f")
                                      if r["final"] else r["state"]) for r in group)
        best = [r for r in group if r["best"]]
        interior = bool(best) and group[0] is not best[0] and group[-1] is not best[0]
        L.append("| %s | %d | %s | %s | %s |" % (label(o), b, tried,
                                                  fmt_lr(best[0]["lr"]) if best else "—",
                                                  "yes" if interior else "**no**"))
    L += ["", "## Every run", "",
          "| run | stage | eval MLM loss | eval MLM acc | eval NSP acc | diverged | wall time |",
          "|---|---|---:|---:|---:|---|---:|"]
    for r in runs:
        f = r["final"] or {}
        L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            r["name"], r["stage"] + (" (chosen)" if r["best"] else ""),
            fmt_num(f.get("eval_mlm_loss"), "%.3f"), fmt_pct(f.get("eval_mlm_acc")),
            fmt_pct(f.get("eval_nsp_acc")), diverged_cell(r), fmt_time(r["wall_s"])))
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    keep = ("name", "stage", "optimizer", "batch", "lr", "seed", "steps", "examples", "state",
            "diverged_at", "wall_s", "best", "final")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"runs": [{k: r.get(k) for k in keep} for r in runs],
                   "final": [dict(optimizer=o, batch=b, **c) for (o, b), c in sorted(cells.items())]},
                  f, indent=1)
        f.write("\n")


# --------------------------------------------------------------------------------------------- plots

def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("compare: matplotlib is missing; installing Debian's python3-matplotlib", flush=True)
        rc = subprocess.call([os.path.join(ROOT, "scripts", "install-deps.sh"), "python3-matplotlib"])
        if rc != 0:
            die("could not install python3-matplotlib (exit %d). HINT: apt-get install "
                "python3-matplotlib, then rerun with --plot-only" % rc, 1)
        import importlib
        importlib.invalidate_caches()
        import site
        for d in site.getsitepackages():
            if d not in sys.path:
                sys.path.append(d)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def smooth(values, window):
    """Trailing moving average that skips missing values (non-finite losses are logged as null)."""
    out, acc, q = [], 0.0, []
    for v in values:
        if finite(v):
            q.append(v)
            acc += v
            if len(q) > window:
                acc -= q.pop(0)
        out.append(acc / len(q) if q else float("nan"))
    return out


def plot_losses(plt, a, runs, path):
    from matplotlib.lines import Line2D
    # the final runs (every seed); the chosen tuning run where there are none yet
    finals = {(r["optimizer"], r["batch"]) for r in runs if r["stage"] == "final" and r["step_records"]}
    shown = [r for r in runs if (r["stage"] == "final" and r["step_records"]) or
             (r["best"] and (r["optimizer"], r["batch"]) not in finals)]
    fig, ax = plt.subplots(2, 2, figsize=(12, 8.2), sharey="row")
    style = {b: STYLES[i % len(STYLES)] for i, b in enumerate(a.batch_sizes)}
    ymax, ymin = None, None
    for r in shown:
        st = [s for s in r["step_records"] if isinstance(s.get("step"), int)]
        if not st:
            continue
        x = [s["step"] for s in st]
        loss = smooth([s.get("loss") for s in st], max(1, len(st) // 25))
        ex = [s * r["batch"] for s in x]
        kw = dict(color=COLOURS[r["optimizer"]], ls=style[r["batch"]], lw=1.4)
        ax[0][0].plot(x, loss, **kw)
        ax[0][1].plot(ex, loss, **kw)
        good = [v for v in loss if finite(v)]
        if good:
            head = good[:max(1, len(good) // 20)]
            ymax = max(ymax or -1e30, max(head))
            ymin = min(ymin or 1e30, min(good))
        if r["state"] == "diverged":
            for axis, xs in ((ax[0][0], x), (ax[0][1], ex)):
                axis.plot([xs[-1]], [good[-1] if good else 0], marker="x", ms=9, mew=2,
                          color=kw["color"])
        ev = [e for e in r["evals"] if finite(e.get("eval_mlm_acc"))]
        if ev:
            es = [e["step"] for e in ev]
            acc = [100 * e["eval_mlm_acc"] for e in ev]
            ax[1][0].plot(es, acc, marker="o", ms=3, **kw)
            ax[1][1].plot([s * r["batch"] for s in es], acc, marker="o", ms=3, **kw)
    if ymax is not None and ymin is not None and ymax > ymin:
        pad = 0.05 * (ymax - ymin)
        ax[0][0].set_ylim(ymin - pad, ymax + pad)
    base = majority_acc(runs)
    if base is not None:
        for axis in ax[1]:
            axis.axhline(100 * base, color="gray", ls=(0, (1, 2)), lw=1.2)
    ax[0][0].set_ylabel("training loss (MLM + NSP), smoothed")
    ax[1][0].set_ylabel("eval MLM accuracy (%)")
    for i in range(2):
        ax[i][0].set_xscale("log")
        ax[i][0].set_xlabel("optimizer step (log scale)")
        ax[i][1].set_xlabel("examples seen")
        for j in range(2):
            ax[i][j].grid(True, alpha=0.3)
    ax[0][0].set_title("against step")
    ax[0][1].set_title("against examples seen (the same budget for every run)")
    handles = [Line2D([], [], color=COLOURS[o], lw=2.5, label=LABELS[o]) for o in a.optimizers]
    handles += [Line2D([], [], color="black", ls=style[b], lw=1.4, label="batch %d" % b)
                for b in a.batch_sizes]
    if base is not None:
        handles.append(Line2D([], [], color="gray", ls=(0, (1, 2)), lw=1.2,
                              label="most frequent token"))
    if any(r["state"] == "diverged" for r in shown):
        handles.append(Line2D([], [], color="black", marker="x", ls="", ms=8, mew=2,
                              label="diverged"))
    # at most 5 entries a row, so that a long legend is wrapped instead of cut at the figure's edges
    ncol = min(len(handles), 5)
    rows = (len(handles) + ncol - 1) // ncol
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, fontsize=10)
    title = ("%s: final runs at each optimizer's tuned lr (every seed), fixed examples"
             % os.path.basename(a.config))
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.045 * rows, 1, 0.97))
    fig.savefig(path, dpi=80)
    plt.close(fig)


LAYER_RE = re.compile(r"\.layer\.(\d+)\.")


def tensor_group(name):
    """Groups Hugging Face BERT tensor names: embeddings, layer i attention, layer i FFN, heads."""
    m = LAYER_RE.search(name)
    if m:
        return ("layer %s attention" if ".attention." in name else "layer %s FFN") % m.group(1)
    if ".embeddings." in name or name.startswith("embeddings."):
        return "embeddings"
    if name.startswith("cls.predictions"):
        return "MLM head"
    if "pooler" in name or name.startswith("cls.seq_relationship"):
        return "pooler + NSP head"
    return name.rsplit(".", 1)[0]


def group_order(g):
    m = re.match(r"layer (\d+) (\w+)", g)
    if m:
        return (1, int(m.group(1)), m.group(2))
    return ({"embeddings": 0, "MLM head": 2}.get(g, 3), 0, g)


def trust_series(trusts):
    """{group: (steps, geometric mean of its adapted tensors' trust ratios)}. Tensors excluded from
    layer adaptation (ratio exactly 1 at every logged step) are left out."""
    if not trusts:
        return {}
    names = set()
    for t in trusts:
        names.update((t.get("trust_ratio") or {}).keys())
    adapted = [n for n in names
               if any(finite(t.get("trust_ratio", {}).get(n)) and t["trust_ratio"][n] != 1.0
                      for t in trusts)]
    groups = {}
    for n in adapted:
        groups.setdefault(tensor_group(n), []).append(n)
    out = {}
    for g, members in groups.items():
        xs, ys = [], []
        for t in trusts:
            vals = [t["trust_ratio"].get(n) for n in members]
            vals = [v for v in vals if finite(v) and v > 0]
            if vals:
                xs.append(t["step"])
                ys.append(math.exp(sum(math.log(v) for v in vals) / len(vals)))
        if xs:
            out[g] = (xs, ys)
    return out


def plot_trust(plt, a, runs, path):
    opts = [o for o in ("lamb", "lars") if o in a.optimizers]
    if not opts:
        return False
    batches = sorted(a.batch_sizes, reverse=True)
    picked = {}
    for o in opts:
        for b in batches:
            cands = [r for r in runs if r["optimizer"] == o and r["batch"] == b and r["trusts"]]
            best = ([r for r in cands if r["stage"] == "final"] or [r for r in cands if r["best"]]
                    or cands)
            if best:
                picked[(o, b)] = best[0]
    batches = [b for b in batches if any((o, b) in picked for o in opts)]
    if not batches:
        return False
    fig, ax = plt.subplots(len(batches), len(opts), figsize=(max(9.0, 6.2 * len(opts)), 2.9 * len(batches) + 1.2),
                           squeeze=False, sharex=True)
    all_groups = sorted({g for r in picked.values() for g in trust_series(r["trusts"])},
                        key=group_order)
    n_layers = 1 + max([group_order(g)[1] for g in all_groups if g.startswith("layer ")] or [0])
    # Up to 8 layers: a colour per layer (attention solid, FFN dashed) and a legend entry per
    # line; deeper models: colour by depth on a colour bar, so the legend stays five entries.
    many = n_layers > 8
    cmap = plt.get_cmap("viridis")
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink",
               "tab:olive", "tab:cyan"]
    fixed = {"embeddings": "black", "MLM head": "tab:red", "pooler + NSP head": "tab:gray"}

    def line_style(g):
        o = group_order(g)
        if o[0] != 1:
            return dict(color=fixed.get(g, "tab:gray"), lw=1.8)
        ls = "-" if o[2] == "attention" else "--"
        if many:
            return dict(color=cmap(o[1] / max(1, n_layers - 1)), ls=ls, lw=0.9)
        return dict(color=palette[o[1] % len(palette)], ls=ls, lw=1.4)

    from matplotlib.ticker import FuncFormatter
    plain = FuncFormatter(lambda v, pos: "%g" % float("%.2g" % v))
    # minor ticks: label 2x and 5x only, so that a narrow range still has numbers but few
    sparse = FuncFormatter(lambda v, pos: "%g" % float("%.2g" % v)
                           if ("%.0e" % v)[0] in "25" else "")
    for i, b in enumerate(batches):
        for j, o in enumerate(opts):
            axis = ax[i][j]
            r = picked.get((o, b))
            if r is None:
                axis.set_visible(False)
                continue
            series = trust_series(r["trusts"])
            for g in all_groups:
                if g in series:
                    xs, ys = series[g]
                    axis.plot([x * b for x in xs], ys, label=g, **line_style(g))
            if r["state"] == "diverged":
                axis.text(0.98, 0.04, "diverged at step %s" % r["diverged_at"], ha="right",
                          transform=axis.transAxes, color="tab:red")
            axis.set_yscale("log")
            axis.yaxis.set_major_formatter(plain)
            lo, hi = axis.get_ylim()
            # within a decade every minor tick gets its number; across several, only 2x and 5x
            axis.yaxis.set_minor_formatter(plain if hi / lo < 12 else sparse)
            axis.tick_params(axis="y", which="minor", labelsize=7)
            axis.grid(True, which="both", alpha=0.25)
            axis.set_title("%s, batch %d, lr %s" % (o.upper(), b, fmt_lr(r["lr"])), fontsize=11)
            if j == 0:
                axis.set_ylabel("trust ratio (log)")
            if i == len(batches) - 1:
                axis.set_xlabel("examples seen")
    from matplotlib.lines import Line2D
    if many:
        handles = [Line2D([], [], label=g, **line_style(g)) for g in all_groups
                   if group_order(g)[0] != 1]
        handles += [Line2D([], [], color=cmap(0.5), ls="-", label="attention (colour = layer)"),
                    Line2D([], [], color=cmap(0.5), ls="--", label="FFN (colour = layer)")]
    else:
        handles = [Line2D([], [], label=g, **line_style(g)) for g in all_groups]
    ncol = min(len(handles), 5 if len(opts) > 1 else 4)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, fontsize=10)
    fig.suptitle("Per-layer trust ratios ||x|| / ||update direction|| (geometric mean per group)",
                 fontsize=12)
    height = fig.get_size_inches()[1]
    bottom = (0.15 + 0.28 * math.ceil(len(handles) / ncol)) / height
    fig.tight_layout(rect=(0, bottom, 0.93 if many else 1, 1 - 0.45 / height))
    if many:
        import matplotlib as mpl
        sm = mpl.cm.ScalarMappable(cmap=cmap, norm=mpl.colors.Normalize(0, n_layers - 1))
        cax = fig.add_axes((0.945, bottom + 0.02, 0.012, 0.9 - bottom))
        fig.colorbar(sm, cax=cax, label="encoder layer")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------- main

def check_runs(a, plan, runs):
    """Dry-runs planned configs so that a mistake stops the comparison before it trains: the steps,
    the batch and the warmup the trainer plans must be the ones asked for."""
    for r in runs:
        phases = dry_run(a.bin, a.config, r["sets"])["phases"]
        got = sum(p["steps"] for p in phases)
        if got != r["steps"] or phases[0]["batch"] != r["batch"]:
            die("%s: the trainer plans %d steps at batch %d, expected %d at %d"
                % (r["name"], got, phases[0]["batch"], r["steps"], r["batch"]))
        if plan[2] is not None and phases[0]["warmup"] not in (None, plan[2]):
            die("%s: the trainer plans %d warmup steps, expected %d"
                % (r["name"], phases[0]["warmup"], plan[2]))


def same_file(x, y):
    try:
        return os.path.samefile(x, y)
    except OSError:
        return os.path.abspath(x) == os.path.abspath(y)


def first_runs(a, plan):
    """The runs the protocol starts with: the first grid of every tuned (optimizer, batch), and one
    final run per (optimizer, batch) at its grid centre (the final lrs are not known yet)."""
    runs = []
    for b in batch_order(a):
        for o in a.optimizers:
            centre = a.lr_base[o] * math.sqrt(b / a.base_batch)
            if len(a.grid) > 1 and not (o in a.sqrt_scaled and b != a.base_batch):
                runs += [make_run(a, plan, o, b, centre * m, a.tune_seed, "tune") for m in a.grid]
            runs.append(make_run(a, plan, o, b, centre, a.seeds[0], "final"))
    return runs


def run_workers(a, argv):
    """--jobs N: N copies of this command, worker K of N running its share of the groups (mine),
    each with its output in WORK/worker-K.log; then 0, 130 when interrupted, 1 when a worker failed.
    A signal to this process goes on to the workers (each passes it to its trainer)."""
    os.makedirs(a.work, exist_ok=True)
    base = [x for x in argv]
    procs, logs = [], []
    for k in range(a.jobs):
        log = open(os.path.join(a.work, "worker-%d.log" % k), "a")
        logs.append(log)
        cmd = [sys.executable, os.path.abspath(__file__)] + base + ["--worker", "%d/%d" % (k, a.jobs)]
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        print("compare: worker %d of %d: %s" % (k, a.jobs, log.name), flush=True)

    def forward(signum, frame):
        for w in procs:
            if w.poll() is None:
                w.send_signal(signum)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [w.wait() for w in procs]
    for log in logs:
        log.close()
    print("compare: workers ended with %s" % codes, flush=True)
    if any(c == 130 for c in codes):
        print("compare: interrupted; the same command continues where this stopped", file=sys.stderr)
        return 130
    if any(c == 2 for c in codes):
        return 2
    return 1 if any(c != 0 for c in codes) else 0


def main(argv):
    if argv[:1] == ["split"]:
        return split_documents(argv[1:])
    a = parse_args(argv)
    # the command that reproduces the results: without the flags that only redraw or preview
    cmdline = "scripts/compare.py " + shlex.join(x for x in argv if x not in ("--plot-only",
                                                                           "--dry-run"))
    if not os.access(a.bin, os.X_OK):
        die("%s is not an executable (HINT: `make` builds ./bert_pretrain)" % a.bin)
    base = dry_run(a.bin, a.config, a.sets)
    a.micro = base["phases"][0]["micro"]
    evalset = base["cfg"].get("data", {}).get("eval")
    if a.valid and evalset and same_file(a.valid, evalset):
        die("--valid %s is the config's data.eval: the lr would be chosen on the set the results "
            "are reported on" % a.valid)
    plan = schedule_plan(a, base)
    if a.dry_run:
        runs = first_runs(a, plan)
        print("compare: checking %d configs" % len(runs), flush=True)
        check_runs(a, plan, runs)
        for r in runs:
            print(shlex.join([a.bin, a.config] + [x for s in r["sets"] for x in ("--set", s)]
                             + ["--resume", "auto"]))
        print("compare: the grids grow while their best lr is at an edge, and the final runs take "
              "the chosen lr (the grid centre is shown)")
        return 0
    os.makedirs(a.out, exist_ok=True)
    stopped = failed = False
    if a.jobs > 1 and not a.plot_only and not a.worker_of:
        status = run_workers(a, argv)
        if status != 0:
            return status
        a.plot_only = True  # every run is recorded in OUT now: collect them as a redraw does
    if a.plot_only:
        runs, _ = study(a, plan, lambda r: os.path.exists(os.path.join(r["dir"], STATUS_FILE)))
    else:
        check_runs(a, plan, first_runs(a, plan)[:1])
        intr = Interrupt()
        outcome = {"failed": False, "stopped": False}

        def step(r):
            if r["stage"] == "final" or len(a.grid) == 1:
                check_runs(a, plan, [r])
            state = train(r, a, intr)
            outcome["failed"] |= state == "failed"
            outcome["stopped"] = state == "interrupted" or bool(intr.signum)
            return not outcome["stopped"]
        try:
            runs, stopped = study(a, plan, step)
        except KeyboardInterrupt:
            stopped = True
        failed = outcome["failed"]
        if stopped:
            print("compare: interrupted; the same command continues where this stopped",
                  file=sys.stderr)
            return 130
        if a.worker_of:
            return 1 if failed else 0  # the parent writes the table and the plots
    runs = collect(runs)
    write_results(a, plan, runs, cmdline)
    plt = ensure_matplotlib()
    plot_losses(plt, a, runs, os.path.join(a.out, "loss.png"))
    made = plot_trust(plt, a, runs, os.path.join(a.out, "trust_ratios.png"))
    print("compare: wrote %s/results.md, loss.png%s" % (a.out, ", trust_ratios.png" if made else ""))
    if not a.plot_only and failed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
