"""`orchestrator tune` against the hand recipes and against random search + ASHA (issue 19):
the same corpus, the same space (the tune's default for the corpus and budget) and the same
budget; the best held-out loss of each, measured on the whole held-out text (not the trainer's
first 30,000 characters), over several seeds of the tune and of the random search.

    python benchmarks/bench_tune.py --corpus tinyshakespeare.txt --minutes 30 --seeds 1,2,3
    python benchmarks/bench_tune.py --corpus builtin:python-docs --minutes 30 --seeds 1,2,3

Starts its own redis-server and `--workers` workers (2 on the 2-core machine); the recipes run
after, as `charrnn train --recipe R --minutes M`, each on one core, two at once. Takes about
(2 x seeds + recipes / 2) x minutes: run it on a quiet machine. Prints one table and one JSON line.
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"
os.environ.update({"CHARRNN_LEASE_SECONDS": "30", "CHARRNN_VISIBILITY_TIMEOUT": "3600"})

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

from charrnn import checkpoint, read_corpus
from worker import keys

# the stack's processes: stacks/ (shared with tests/), beside this script's own folder
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stacks")
)
from stack import REPO, RedisServer, Worker, run_cli


def whole_heldout_loss(raw: bytes, text: str) -> float:
    """The checkpoint's held-out loss on the corpus's whole held-out tail."""
    ck = checkpoint.load(raw)
    t = ck.trainer(text, ck.config.replace(val_max_chars=0))
    return float(t.evaluate())


def run_tune(url, r, corpus, minutes, seed, sampler, workers) -> dict:
    t0 = time.monotonic()
    # random search is the baseline as it stands: every slot searches
    plain = ["--no-recipe-trial"] if sampler == "random" else []
    p = run_cli("tune", "--corpus", corpus, "--minutes", str(minutes), "--seed", str(seed),
                "--sampler", sampler, "--parallel", str(workers), "--wait", "--json", *plain,
                url=url, timeout=minutes * 60 + 1800)  # fmt: skip
    if p.returncode not in (0, 1):
        raise SystemExit(f"tune failed: {p.stderr[-2000:]}")
    out = json.loads(p.stdout)
    best = out["best"]
    raw = r.hget(keys.checkpoint(best["job_id"], "best"), "data") if best else None
    spec = json.loads(r.hget(keys.sweep(out["tune_id"]), "spec"))
    recipe_job = spec["tune"].get("recipe_job")
    rows = [{
        "what": f"{sampler} seed {seed}",
        "seconds": round(time.monotonic() - t0),
        "trials": out["trials"],
        "best": best,
        "best_is": "recipe trial" if best and best["job_id"] == recipe_job else "searched",
        "raw": raw,
    }]  # fmt: skip
    if recipe_job:  # what the search alone gave: the best of the other trials
        searched = [j.decode() for j in r.lrange(keys.sweep_jobs(out["tune_id"]), 0, -1)]
        losses = {j: float(v) for j in searched if j != recipe_job
                  and (v := r.hget(keys.job(j), "best_val_loss"))}  # fmt: skip
        for label, job in (
            ("  its recipe trial", recipe_job),
            ("  its best searched", min(losses, key=losses.get, default=None)),
        ):
            if job:
                rows.append({"what": label, "seconds": "", "trials": "",
                             "raw": r.hget(keys.checkpoint(job, "best"), "data")})  # fmt: skip
    return rows


def run_recipes(corpus, recipes, minutes, folder) -> list[dict]:
    """Each recipe in its own process on one core, at most two at once (one per core)."""
    rows = []
    for pair in (recipes[i : i + 2] for i in range(0, len(recipes), 2)):
        t0 = time.monotonic()
        procs = {}
        for recipe in pair:
            path = os.path.join(folder, f"{recipe}.npz")
            procs[recipe] = (path, subprocess.Popen(
                [sys.executable, "-m", "charrnn.cli", "train", "--corpus", corpus,
                 "--recipe", recipe, "--minutes", str(minutes), "--checkpoint", path,
                 "--json"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))  # fmt: skip
        for recipe, (path, proc) in procs.items():
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"recipe {recipe} failed: {err.decode()[-2000:]}")
            with open(path, "rb") as f:
                rows.append({"what": f"recipe {recipe}", "raw": f.read(),
                             "seconds": round(time.monotonic() - t0)})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="builtin:python-docs")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--recipes", default="10min,60min")
    ap.add_argument("--samplers", default="tpe,random")
    a = ap.parse_args()
    text = read_corpus(a.corpus)
    seeds = [int(s) for s in a.seeds.split(",")]
    folder = tempfile.mkdtemp(prefix="bench_tune_")
    server = RedisServer(os.path.join(folder, "redis")).start()
    workers = [Worker(server.url(), f"w{i}", folder).start() for i in range(a.workers)]
    rows = []
    try:
        r = server.client()
        for seed in seeds:
            for sampler in [x for x in a.samplers.split(",") if x]:
                rows += run_tune(server.url(), r, a.corpus, a.minutes, seed, sampler, a.workers)
    finally:
        for w in workers:
            w.stop()
        server.stop()
    rows += run_recipes(a.corpus, [x for x in a.recipes.split(",") if x], a.minutes, folder)
    for row in rows:
        row["heldout"] = whole_heldout_loss(row.pop("raw"), text) if row.get("raw") else None
    print(f"corpus {a.corpus}, {a.minutes:g} min, {a.workers} workers, load "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'run':24} {'seconds':>8} {'trials':>7} {'held-out':>9}")
    for row in rows:
        held = "-" if row["heldout"] is None else f"{row['heldout']:.4f}"
        print(f"{row['what']:24} {row['seconds']:>8} {row.get('trials', '-'):>7} {held:>9}")
    for kind in ("tpe", "random"):
        vals = [x["heldout"] for x in rows if x["what"].startswith(f"{kind} ") and x["heldout"]]
        if vals:
            print(f"{kind} mean {statistics.mean(vals):.4f} over {len(vals)} seeds")
    print(json.dumps({"corpus": a.corpus, "minutes": a.minutes, "rows": rows}, default=str))


if __name__ == "__main__":
    main()
