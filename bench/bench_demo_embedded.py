"""`cowork demo` on the embedded model: wall time, tokens, and where the time goes, over N runs.

Each run makes a fresh scratch team and runs the demo's three lanes through the real runner on SmolLM2-135M.
Prints per run: ok, wall, model calls, tokens, seconds inside model calls, and the prompt rate (tokens in per
model-second; queueing at the one-request server counts), then the success ratio and median wall. The machine's load average is printed too: the model
shares the CPU with everything else.

    uv run python bench/bench_demo_embedded.py [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cowork import demo  # noqa: E402
from cowork.engines import local_model  # noqa: E402


def model_seconds(root: Path) -> tuple[int, float]:
    from cowork.store import Store

    store = Store(root / ".cowork" / "state.db")
    rows = store.all("SELECT ended_at - started_at AS s FROM steps WHERE kind='model' AND state='done'")
    return len(rows), sum(r["s"] for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ok, why = local_model.local_available()
    if not ok:
        print(f"embedded model not available: {why}")
        return 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWORK_") and not k.endswith("_API_KEY")}
    walls, passed = [], 0
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        env["COWORK_LOCAL_STATE_DIR"] = str(Path(tmp) / "local-model")
        os.environ.update(env)
        for k in [k for k in os.environ if k not in env]:
            del os.environ[k]
        for i in range(args.runs):
            root = Path(tmp) / f"run{i}"
            load = os.getloadavg()[0]
            r = demo.run_demo(root, keep=True, progress=lambda _line: None, env=env)
            calls, secs = model_seconds(root)
            walls.append(r.wall_s)
            passed += r.ok
            lanes = " ".join(f"{x['lane']}:{x['state']}" for x in r.lanes)
            print(f"run {i + 1}: ok={r.ok} wall={r.wall_s:.1f}s load={load:.1f} calls={calls} model={secs:.1f}s "
                  f"tokens={r.tokens_in}/{r.tokens_out} in_per_model_s={r.tokens_in / secs if secs else 0:.0f} "
                  f"lanes=[{lanes}]" + (f" error={r.error}" if r.error else ""))
    print(f"finished {passed}/{args.runs}; median wall {statistics.median(walls):.1f}s")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
