#!/usr/bin/env python3
"""Rewrite docker-compose.yml's copies of the roles' ACL rules (*_ACL_RULES) and of the Lua
scripts (LUA_*) from worker/acl.py and worker/scripts.py, in place. The redis image has no
Python, so the compose file holds copies; tests/test_acl.py and tests/test_scripts_acl.py fail
while they differ. Run it after changing a script (its digest is in the rules) or upgrading
kombu or redis-py (two of the scripts are theirs):

    python scripts/sync-compose-acl.py
"""

from __future__ import annotations

import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from worker import acl, scripts  # noqa: E402


def synced(text: str) -> str:
    for name, role in acl.roles().items():
        line = f'      {name.upper()}_ACL_RULES: "{role.rules()}"\n'
        text = re.sub(
            rf"      {name.upper()}_ACL_RULES: .*\n", lambda _, new=line: new, text, count=1
        )
    # the LUA_* block: from its first variable to the next line indented as a variable
    # that is not one of them (or the end of the service's environment)
    lines = text.splitlines(keepends=True)
    start = next(i for i, s in enumerate(lines) if s.startswith("      LUA_"))
    end = start + 1
    while end < len(lines) and (
        lines[end].startswith("        ")
        or lines[end].startswith("      LUA_")
        or not lines[end].strip()
    ):
        end += 1
    return "".join(lines[:start]) + scripts.compose_environment() + "".join(lines[end:])


def main() -> int:
    path = os.path.join(REPO, "docker-compose.yml")
    with open(path) as f:
        before = f.read()
    after = synced(before)
    if after != before:
        with open(path, "w") as f:
            f.write(after)
    print(f"{path}: {'updated' if after != before else 'already in sync'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
