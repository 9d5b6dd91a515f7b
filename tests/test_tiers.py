"""The test tiers select what docs/development.md says: a `-m` on the command line replaces the
one in pyproject's addopts, and the runs that need root, containers or a browser still stay out
of every run whose expression does not name them. Collection only, in a child pytest."""

import subprocess
import sys

import pytest

from conftest import REPO

# the files that hold browser, hosts and compose tests, beside slow and fast ones
FILES = ["tests/test_dashboard.py", "tests/test_hosts.py", "tests/test_compose.py"]


def collected(*args: str) -> set[str]:
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *args, *FILES],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert p.returncode in (0, 5), p.stdout + p.stderr  # 5: nothing collected
    return {line for line in p.stdout.splitlines() if "::" in line}


@pytest.fixture(scope="module")
def opt_in():
    runs = {m: collected("-m", m) for m in ("browser", "hosts", "compose")}
    assert all(runs.values()), runs  # each marker still selects its own tests
    return runs


@pytest.mark.parametrize("expr", [None, "not slow"])
def test_a_run_that_does_not_name_them_leaves_the_opt_in_tests_out(opt_in, expr):
    got = collected(*(["-m", expr] if expr else []))
    assert got, expr
    for marker, tests in opt_in.items():
        assert not got & tests, (expr, marker, sorted(got & tests))


def test_an_expression_that_names_one_brings_in_that_one_only(opt_in):
    got = collected("-m", "browser or not slow")
    assert opt_in["browser"] <= got
    assert not got & (opt_in["hosts"] | opt_in["compose"])
