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
OPTIMIZERS = ("lamb", "lars", "adam", "adamw")
# Peak lrs at the base batch (256) for the demo model (bert-tiny on the Brown corpus): the best of a
# sweep at batch 64 (docs/comparison.md), times sqrt(256 / 64). LAMB and LARS scale each layer's
# step to lr * ||x||, so their lr is a relative step size; Adam's and AdamW's is an absolute one
# per coordinate, hence the different scales.
DEFAULT_LR = {"lamb": 4e-2, "lars": 8e-2, "adam": 8e-3, "adamw": 4e-3}
COLOURS = {"lamb": "tab:blue", "lars": "tab:orange", "adam": "tab:green", "adamw": "tab:red"}
STYLES = ["-", "--", ":", "-."]
STATUS_FILE = "compare.json"


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
        description="Train the same config under LAMB, LARS, Adam and AdamW at one or more global "
                    "batch sizes (square-root lr scaling, fixed epochs), then plot and tabulate.")
    p.add_argument("config", help="the YAML config every run starts from")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                   help="comma-separated subset of lamb,lars,adam,adamw (default: all)")
    p.add_argument("--batch-sizes", default="256,1024,4096", help="global batch sizes")
    p.add_argument("--base-batch", type=int, default=256,
                   help="the batch the --lr values and --epochs-steps refer to (default 256)")
    p.add_argument("--lr", default="",
                   help="peak lr per optimizer at the base batch, e.g. lamb=1e-2,adam=1e-3 "
                        "(default %s)" % ",".join("%s=%g" % kv for kv in DEFAULT_LR.items()))
    p.add_argument("--lr-sweep", default="1",
                   help="lr multipliers tried per optimizer and batch, e.g. 0.5,1,2; the best by "
                        "final eval MLM loss is the one reported (default 1)")
    p.add_argument("--sweep-at", choices=("all", "base"), default="all",
                   help="all: the lr sweep runs at every batch size (default); base: only at the "
                        "base batch, and the other batches take its best lr scaled by "
                        "sqrt(b / base), the paper's recipe (fewer runs)")
    p.add_argument("--epochs-steps", type=int, default=0,
                   help="optimizer steps at the base batch; batch b runs N*base/b steps (default: "
                        "as many examples as the config's own phases)")
    p.add_argument("--evals", type=int, default=8,
                   help="evaluations per run (training.eval_every = steps / evals; default 8)")
    p.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="config override passed to every run (repeatable)")
    p.add_argument("--bin", default=os.path.join(ROOT, "bert_pretrain"),
                   help="the bert_pretrain binary (default ./bert_pretrain)")
    p.add_argument("--dry-run", action="store_true",
                   help="check every run's config and print the commands; train nothing")
    p.add_argument("--plot-only", action="store_true",
                   help="train nothing; redraw the plots and the table from the runs in OUT")
    a = p.parse_args(argv)

    a.optimizers = parse_list(a.optimizers, str, "--optimizers")
    for o in a.optimizers:
        if o not in OPTIMIZERS:
            die("--optimizers: unknown optimizer '%s' (choose from %s)" % (o, ",".join(OPTIMIZERS)))
    if len(set(a.optimizers)) != len(a.optimizers):
        die("--optimizers: an optimizer is named twice")
    a.batch_sizes = sorted(set(parse_list(a.batch_sizes, int, "--batch-sizes")))
    if a.batch_sizes[0] < 1 or a.base_batch < 1:
        die("batch sizes must be positive")
    a.lr_sweep = parse_list(a.lr_sweep, float, "--lr-sweep")
    if any(not (m > 0 and math.isfinite(m)) for m in a.lr_sweep):
        die("--lr-sweep: multipliers must be positive")
    if len(set(a.lr_sweep)) != len(a.lr_sweep):
        die("--lr-sweep: a multiplier is named twice")
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
    if a.sweep_at == "base" and a.base_batch not in a.batch_sizes:
        die("--sweep-at base: the base batch %d must be one of --batch-sizes" % a.base_batch)
    if a.epochs_steps < 0 or a.evals < 1:
        die("--epochs-steps must be >= 0 and --evals >= 1")
    for s in a.sets:
        if "=" not in s:
            die("--set: expected section.key=value, got '%s'" % s)
        key = s.split("=", 1)[0].strip()
        if key in ("optimizer.name", "schedule.lr", "training.run_dir") or re.fullmatch(
                r"phases\.\d+\.(batch_size|steps)", key):
            die("--set %s: the comparison sets this for each run (use --optimizers, --lr, "
                "--batch-sizes, --epochs-steps, --out)" % key)
    if not os.path.isfile(a.config):
        die("config %s: no such file" % a.config)
    a.out = os.path.abspath(a.out)
    return a


# ----------------------------------------------------------------------------- the trainer's dry run

PHASE_RE = re.compile(r"^(\d+)\s+(\d+)\s+(\d+) = (\d+) x (\d+) x (\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+"
                      r"(\S+)\s+(\S+)")


def dry_run(binary, config, sets):
    """Runs `bert_pretrain CONFIG --set ... --dry-run`; returns its phases [{seq_len, batch, micro,
    steps, warmup (None when the phase continues a schedule segment)}] from the resolved config it
    prints as JSON (or, failing that, from its summary table), or exits 2 with the trainer's
    message."""
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
    return phases


# -------------------------------------------------------------------------------------- the plan

def fmt_lr(lr):
    return "%.3g" % lr


def plan_runs(a, base_phases, batches, mults):
    """Every (optimizer, batch in batches, multiplier in mults[optimizer]) as a dict with its run
    dir and its --set overrides."""
    cfg_examples = [p["steps"] * p["batch"] for p in base_phases]
    total_examples = a.epochs_steps * a.base_batch if a.epochs_steps else sum(cfg_examples)
    micro = base_phases[0]["micro"]
    runs = []
    for b in batches:
        steps = []
        for ex in cfg_examples:
            # the config's split of examples between phases, scaled to the total asked for
            n = ex * total_examples / sum(cfg_examples) / b
            steps.append(max(1, int(round(n))))
        mb = min(micro, b)
        mb = math.gcd(b, mb)
        for opt in a.optimizers:
            for mult in mults[opt]:
                lr = a.lr_base[opt] * mult * math.sqrt(b / a.base_batch)
                name = "%s_b%d_lr%s" % (opt, b, fmt_lr(lr))
                run_dir = os.path.join(a.out, name)
                total = sum(steps)
                sets = ["optimizer.name=%s" % opt, "schedule.lr=%.6g" % lr,
                        "training.run_dir=%s" % run_dir,
                        "training.eval_every=%d" % max(1, total // a.evals),
                        "training.trust_ratio_every=%d" % max(1, total // 40),
                        "training.checkpoint_every=%d" % max(1, total // 5)]
                for i, s in enumerate(steps):
                    sets += ["phases.%d.batch_size=%d" % (i, b), "phases.%d.steps=%d" % (i, s)]
                sets += a.sets
                if mb != micro:
                    # after the user's: a micro-batch that does not divide this batch cannot run
                    sets.append("training.micro_batch=%d" % mb)
                runs.append({"name": name, "dir": run_dir, "optimizer": opt, "batch": b,
                             "mult": mult, "lr": lr, "steps": total, "examples": total * b,
                             "swept": a.sweep_at == "all" or b == a.base_batch, "sets": sets})
    return runs


def best_mults(a, base_runs):
    """--sweep-at base: the multiplier whose run at the base batch ended with the lowest eval MLM
    loss, per optimizer; the smallest multiplier when none of them finished."""
    out = {}
    for opt in a.optimizers:
        group = [r for r in collect(base_runs) if r["optimizer"] == opt]
        best = [r for r in group if r["best"]]
        out[opt] = [best[0]["mult"] if best else min(a.lr_sweep)]
    return out


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


def train(run, a, intr):
    """Trains (or resumes) one run; returns its state: finished, diverged, failed, interrupted."""
    os.makedirs(run["dir"], exist_ok=True)
    status = read_status(run["dir"])
    # the run dir name holds the optimizer, batch and lr, not the steps or the --set options (the
    # run dir itself may have moved with OUT)
    old = [x for x in status.get("sets", []) if not x.startswith("training.run_dir=")]
    new = [x for x in run["sets"] if not x.startswith("training.run_dir=")]
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
    with open(os.path.join(run["dir"], "train.log"), "a") as log:
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
    steps, evals, _ = read_metrics(run["dir"])
    status = read_status(run["dir"])
    status["wall_s"] = status.get("wall_s", 0.0) + wall
    status["rc"] = rc
    status["command"] = shlex.join(cmd)
    status["sets"] = run["sets"]
    if rc == 0 and finished_in_metrics(run, steps, evals):
        state = "finished"
    elif rc == 0 or intr.signum:
        state = "interrupted"
    elif rc == 1 and any("non-finite" in line for line in tail):
        state = "diverged"
        status["diverged_at"] = steps[-1]["step"] + 1 if steps else 1
    elif rc == 2:
        sys.stdout.write("".join(tail[-20:]))
        die("%s: the trainer refused the config (exit 2)" % run["name"])
    else:
        state = "failed"
        print("== %s: exit status %d; last lines of its output are in %s"
              % (run["name"], rc, os.path.join(run["dir"], "train.log")), flush=True)
    status["state"] = state
    write_status(run["dir"], status)
    print("== %s: %s after %.0f s" % (run["name"], state, wall), flush=True)
    return state


# ------------------------------------------------------------------------------------------ results

def final_eval(run, evals):
    last = [e for e in evals if e.get("step") == run["steps"]]
    return last[-1] if last else None


def collect(runs):
    """Each run with its metrics, state, final eval, wall time; marks the best lr per (opt, batch)."""
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
        r["best"] = False
    groups = {}
    for r in runs:
        groups.setdefault((r["optimizer"], r["batch"]), []).append(r)
    for group in groups.values():
        scored = [r for r in group if r["final"] is not None
                  and isinstance(r["final"].get("eval_mlm_loss"), (int, float))]
        if scored:
            min(scored, key=lambda r: r["final"]["eval_mlm_loss"])["best"] = True
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


def write_results(a, runs, cmdline):
    sweep = len(a.lr_sweep) > 1
    L = ["# Optimizer comparison", "",
         "Config `%s`; base batch %d; square-root lr scaling lr(b) = lr_base * sqrt(b / %d); "
         "fixed epochs: every run sees %d examples (steps = %d * %d / b)."
         % (os.path.relpath(a.config, ROOT), a.base_batch, a.base_batch,
            runs[0]["examples"] if runs else 0,
            runs[0]["examples"] // a.base_batch if runs else 0, a.base_batch), "",
         "Reproduce: `%s`" % cmdline, ""]
    if sweep and a.sweep_at == "base":
        L += ["The lr sweep (x%s) ran at batch %d only; the other batch sizes take the best "
              "multiplier found there, scaled by sqrt(b / %d), as the paper does." %
              (", x".join("%g" % m for m in a.lr_sweep), a.base_batch, a.base_batch), ""]
    L += [
         "| run | optimizer | batch | lr | steps | eval MLM loss | eval MLM acc | eval NSP acc "
         "| diverged | wall time | best lr |",
         "|---|---|---:|---:|---:|---:|---:|---:|---|---:|:---:|"]
    for r in runs:
        f = r["final"] or {}
        L.append("| %s | %s | %d | %s%s | %d | %s | %s | %s | %s | %s | %s |" % (
            r["name"], r["optimizer"], r["batch"], fmt_lr(r["lr"]),
            ("" if not sweep else " (x%g)" % r["mult"] if r["swept"]
             else " (x%g of batch %d)" % (r["mult"], a.base_batch)), r["steps"],
            fmt_num(f.get("eval_mlm_loss"), "%.3f"), fmt_pct(f.get("eval_mlm_acc")),
            fmt_pct(f.get("eval_nsp_acc")), diverged_cell(r), fmt_time(r["wall_s"]),
            "**best**" if r["best"] and r["swept"] else ""))
    base = majority_acc(runs)
    if base is not None:
        L += ["", "Predicting the most frequent token everywhere scores %s MLM accuracy on the eval "
              "set; the uniform guess has loss ln(vocab)." % fmt_pct(base)]
    L += ["", "Best lr per optimizer and batch: final eval MLM loss / MLM accuracy (lr).", "",
          "| optimizer | " + " | ".join("batch %d" % b for b in a.batch_sizes) + " |",
          "|---|" + "---:|" * len(a.batch_sizes)]
    for opt in a.optimizers:
        cells = []
        for b in a.batch_sizes:
            group = [r for r in runs if r["optimizer"] == opt and r["batch"] == b]
            best = [r for r in group if r["best"]]
            if best:
                f = best[0]["final"]
                cells.append("%s / %s (%s)" % (fmt_num(f.get("eval_mlm_loss"), "%.3f"),
                                               fmt_pct(f.get("eval_mlm_acc")), fmt_lr(best[0]["lr"])))
            elif any(r["state"] == "diverged" for r in group):
                cells.append("diverged")
            else:
                cells.append("—")
        L.append("| %s | %s |" % (opt, " | ".join(cells)))
    edge = []
    if sweep:
        for r in runs:
            if r["best"] and r["swept"] and r["mult"] in (min(a.lr_sweep), max(a.lr_sweep)):
                edge.append("%s at batch %d (x%g)" % (r["optimizer"], r["batch"], r["mult"]))
    if edge:
        L += ["", "The best lr sits at the edge of the sweep for: %s; a wider sweep may find a "
              "better one." % "; ".join(edge)]
    L += ["", "Lowest final eval MLM loss at each batch:", ""]
    for b in a.batch_sizes:
        best = [r for r in runs if r["batch"] == b and r["best"]]
        if best:
            w = min(best, key=lambda r: r["final"]["eval_mlm_loss"])
            L.append("- batch %d: %s (%.3f)" % (b, w["optimizer"], w["final"]["eval_mlm_loss"]))
        else:
            L.append("- batch %d: no finished run" % b)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    keep = ("name", "optimizer", "batch", "mult", "lr", "steps", "examples", "state",
            "diverged_at", "wall_s", "best", "final")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump([{k: r[k] for k in keep} for r in runs], f, indent=1)
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
    shown = [r for r in runs if r["best"] or (r["state"] in ("diverged", "unfinished", "failed",
                                                               "interrupted")
                                              and not any(o["best"] for o in runs
                                                          if o["optimizer"] == r["optimizer"]
                                                          and o["batch"] == r["batch"]))]
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
    handles = [Line2D([], [], color=COLOURS[o], lw=2.5, label=o.upper() if o != "adamw" else "AdamW")
               for o in a.optimizers]
    handles = [h if h.get_label() != "ADAM" else Line2D([], [], color=COLOURS["adam"], lw=2.5,
                                                          label="Adam") for h in handles]
    handles += [Line2D([], [], color="black", ls=style[b], lw=1.4, label="batch %d" % b)
                for b in a.batch_sizes]
    if base is not None:
        handles.append(Line2D([], [], color="gray", ls=(0, (1, 2)), lw=1.2,
                              label="most frequent token"))
    if any(r["state"] == "diverged" for r in shown):
        handles.append(Line2D([], [], color="black", marker="x", ls="", ms=8, mew=2,
                              label="diverged"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
               fontsize=10)
    title = "%s: same data and seed, square-root lr scaling, fixed epochs" % os.path.basename(a.config)
    if len(a.lr_sweep) > 1:
        title += "; best lr per optimizer and batch"
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
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
            best = [r for r in cands if r["best"]] or cands
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

def check_runs(a, base, runs):
    """Dry-runs every planned config so that a mistake stops the comparison before it trains."""
    for r in runs:
        phases = dry_run(a.bin, a.config, r["sets"])
        got = sum(p["steps"] for p in phases)
        if got != r["steps"] or phases[0]["batch"] != r["batch"]:
            die("%s: the trainer plans %d steps at batch %d, expected %d at %d"
                % (r["name"], got, phases[0]["batch"], r["steps"], r["batch"]))
        w = phases[0]["warmup"]
        if w is not None and base[0]["warmup"] and base[0]["steps"] > 0:
            want = base[0]["warmup"] / base[0]["steps"] * phases[0]["steps"]
            if abs(w - want) > max(1.0, 0.02 * want):
                print("compare: warning: %s warms up for %d steps, not %.0f: the config gives "
                      "warmup_steps, not warmup_ratio, so warmup does not scale with the steps"
                      % (r["name"], w, want), file=sys.stderr)


def run_all(a, runs, intr):
    """Trains the runs in order; returns (stopped, failed)."""
    failed = False
    for r in runs:
        state = train(r, a, intr)
        failed |= state == "failed"
        if state == "interrupted" or intr.signum:
            return True, failed
    return False, failed


def main(argv):
    a = parse_args(argv)
    # the command that reproduces the results: without the flags that only redraw or preview
    cmdline = "scripts/compare.py " + shlex.join(x for x in argv if x not in ("--plot-only",
                                                                           "--dry-run"))
    if not os.access(a.bin, os.X_OK):
        die("%s is not an executable (HINT: `make` builds ./bert_pretrain)" % a.bin)
    base = dry_run(a.bin, a.config, a.sets)
    sweep = {o: a.lr_sweep for o in a.optimizers}
    if a.sweep_at == "base":
        first = plan_runs(a, base, [a.base_batch], sweep)
        later = [b for b in a.batch_sizes if b != a.base_batch]
    else:
        first = plan_runs(a, base, a.batch_sizes, sweep)
        later = []
    stopped = failed = False
    if not a.plot_only:
        # the later runs' lrs are not known yet; their configs are checked at multiplier 1
        probe = plan_runs(a, base, later, {o: [1.0] for o in a.optimizers})
        print("compare: %d runs%s into %s; checking each config"
              % (len(first), " (then %d at the other batch sizes)" % len(probe) if later else "",
                 a.out), flush=True)
        check_runs(a, base, first + probe)
        if a.dry_run:
            for r in first + probe:
                print(shlex.join([a.bin, a.config] + [x for s in r["sets"] for x in ("--set", s)]
                                 + ["--resume", "auto"]))
            if later:
                print("compare: the runs at batch %s take the best lr of batch %d (multiplier 1 "
                      "shown)" % (",".join(map(str, later)), a.base_batch))
            return 0
        os.makedirs(a.out, exist_ok=True)
        intr = Interrupt()
        try:
            stopped, failed = run_all(a, first, intr)
            if later and not stopped:
                second = plan_runs(a, base, later, best_mults(a, first))
                stopped, failed2 = run_all(a, second, intr)
                failed |= failed2
        except KeyboardInterrupt:
            stopped = True
        if stopped:
            print("compare: interrupted; the same command continues where this stopped",
                  file=sys.stderr)
            return 130
    runs = first + (plan_runs(a, base, later, best_mults(a, first)) if later else [])
    os.makedirs(a.out, exist_ok=True)
    runs = collect(runs)
    write_results(a, runs, cmdline)
    plt = ensure_matplotlib()
    plot_losses(plt, a, runs, os.path.join(a.out, "loss.png"))
    made = plot_trust(plt, a, runs, os.path.join(a.out, "trust_ratios.png"))
    print("compare: wrote %s/results.md, loss.png%s" % (a.out, ", trust_ratios.png" if made else ""))
    if not a.plot_only and failed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
