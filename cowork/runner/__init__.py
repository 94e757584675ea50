"""The runner: schedules lanes, runs engines, journals every step, recovers after a crash."""
