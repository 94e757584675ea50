"""The SQLite store (.cowork/state.db): the bus and journal every cowork process shares."""
from cowork.store.store import Store, now, day

__all__ = ["Store", "now", "day"]
