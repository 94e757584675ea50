"""`python -m cowork.runner --root DIR [--task T ...] [--reclaim]`: a detached runner process."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cowork.runner", description="Run cowork tasks to their end.")
    parser.add_argument("--root", required=True, help="the team repository")
    parser.add_argument("--task", action="append", default=[], help="a task to run (repeatable)")
    parser.add_argument("--reclaim", action="store_true", help="also take over tasks whose runner died")
    args = parser.parse_args(argv)
    from cowork.runner.launch import run_here
    from cowork.workspace import Workspace

    ws = Workspace.find(args.root)
    results = run_here(ws, args.task, reclaim=args.reclaim)
    for task, state in results.items():
        print(f"{task}: {state}", flush=True)
    return 0 if all(s == "done" for s in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
