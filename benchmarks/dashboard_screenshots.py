"""The README's two dashboard screenshots, made rather than drawn: starts its own redis-server and
two workers, runs a small ASHA sweep, serves the dashboard and saves its sweep page and the best
job's page, as headless Chromium shows them, to docs/.

    python benchmarks/dashboard_screenshots.py [--corpus FILE]   # default $CHARRNN_BENCH_CORPUS, else builtin:python-docs

Needs the test extra (selenium) and Debian's chromium and chromium-driver (.ci/run installs them).
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# the stack's processes: stacks/ (shared with tests/), beside this script's own folder
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stacks")
)
from stack import (  # noqa: E402
    DASHBOARD_TOKEN,
    RedisServer,
    Worker,
    free_port,
    run_cli,
    start_dashboard,
    wait_status,
)

DEFAULT_CORPUS = os.environ.get("CHARRNN_BENCH_CORPUS") or "builtin:python-docs"


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1280,900",
    ):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    return webdriver.Chrome(
        service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts
    )


def shoot(driver, url: str, path: str, ready: str) -> None:
    """The whole page, once the script `ready` returns true (the charts are drawn)."""
    driver.set_window_size(1280, 900)
    driver.get(url)
    deadline = time.monotonic() + 20
    while not driver.execute_script(ready) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(height, 2400))
    time.sleep(0.5)
    driver.save_screenshot(path)
    print(f"wrote {path}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--corpus",
        default=DEFAULT_CORPUS,
    )
    ap.add_argument("--out", default=os.path.join(REPO, "docs"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="charrnn-shots-")
    server = RedisServer(os.path.join(tmp, "redis")).start()
    url = server.url()
    workers = [
        Worker(url, f"shot{i}", tmp, CHARRNN_LEASE_SECONDS=30).start(wait=False) for i in (1, 2)
    ]
    dash = None
    try:
        for w in workers:
            w.wait_ready()
        out = json.loads(
            run_cli(
                "sweep",
                "--json",
                "--corpus",
                args.corpus,
                "--name",
                "lr-by-width",
                "--grid",
                "hidden_size=32,64",
                "--grid",
                "learning_rate=0.1,0.03,0.01,0.003",
                "--num-layers",
                "1",
                "--iterations",
                "2400",
                "--eval-every",
                "200",
                "--sample-every",
                "400",
                "--sample-length",
                "120",
                "--early-stop",
                "asha",
                "--rungs",
                "400,1200",
                "--reduction-factor",
                "2",
                url=url,
                check=True,
                timeout=120,
            ).stdout
        )
        for j in out["job_ids"]:
            wait_status(
                server.client(), j, ("succeeded", "failed", "cancelled", "stopped"), timeout=900
            )
        best = json.loads(
            run_cli("compare", out["sweep_id"], "--json", url=url, check=True).stdout
        )["jobs"][0]["job_id"]
        port = free_port()
        dash = start_dashboard(url, port)
        time.sleep(2)
        base = f"http://127.0.0.1:{port}"
        driver = browser()
        try:
            driver.get(f"{base}/?token={DASHBOARD_TOKEN}")  # once: the cookie opens the rest
            shoot(
                driver,
                f"{base}/sweep/{out['sweep_id']}",
                os.path.join(args.out, "dashboard-sweep.png"),
                "return !!document.querySelector('#curves-val canvas')",
            )
            shoot(
                driver,
                f"{base}/job/{best}",
                os.path.join(args.out, "dashboard-job.png"),
                "return !!document.querySelector('#loss-chart canvas')",
            )
        finally:
            driver.quit()
    finally:
        if dash:
            dash.terminate()
            dash.wait(10)
        for w in workers:
            w.stop()
        server.stop(kill=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
