"""Git operations: lane worktrees and commits, the merge lock, the merge queue, merging and reverting.

Everything goes through the git CLI (`cowork.gitops.git.git`), so worktrees, ref updates and hooks behave exactly
as they do for a person at the terminal.
"""
