"""Committing a task's own files (brief.md, plan.md, summary.md) on the merge target.

The same path a merge takes: the merge lock, the merger's worktree at the target's tip, a compare-and-swap move
of the target, and only a clean fast-forward of a user's checkout (cowork.gitops.checkout). The user's working
tree is never otherwise touched.
"""
from __future__ import annotations

from pathlib import Path

from cowork.errors import CoworkError

MAX_ATTEMPTS = 3


def commit_to_target(ws, store, settings, files: dict[str, str], message: str, *, holder: str,
                     trailers: dict[str, str] | None = None, wait_s: float = 120.0) -> str | None:
    """Commit `files` (repo-relative path -> text) on top of the merge target.

    Returns:
        The new commit id, or None when the files were already there as given.

    Raises:
        CoworkError: the target kept moving, or the lock stayed busy.
    """
    from cowork.gitops import checkout
    from cowork.redact import redact
    from cowork.gitops.git import COWORK, git, head, identity_env, run_git, with_trailers
    from cowork.gitops.lock import MergeLock
    from cowork.gitops.mergetree import cas_move, merge_tree, reset_tree, target_tip

    target = settings.merge.target
    with MergeLock(store, holder, lease_s=settings.merge.lease_s, wait_s=wait_s) as lock:
        tree = merge_tree(ws)
        for _ in range(MAX_ATTEMPTS):
            old = target_tip(ws, target)
            reset_tree(tree, old)
            for rel, text in files.items():
                path = Path(tree) / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(redact(text), encoding="utf-8")  # briefs and summaries are committed
            git("add", "--", *files, cwd=tree)
            if run_git("diff", "--cached", "--quiet", cwd=tree).returncode == 0:
                return None
            text = with_trailers(message, trailers, cwd=tree)
            git("commit", "--quiet", "--no-verify", "--cleanup=whitespace", "-F", "-", cwd=tree,
                env=identity_env(COWORK, ws.root), input=text)
            new = head(tree)
            lock.check()
            plan = checkout.before_move(ws, target, old, store=store,
                                          task=(trailers or {}).get("Cowork-Task"))
            if cas_move(ws, target, new, old, f"cowork: {message.splitlines()[0]}"):
                checkout.after_move(ws, plan, new)
                return new
    raise CoworkError(f"{target} kept moving while committing {', '.join(files)}", hint="try again")
