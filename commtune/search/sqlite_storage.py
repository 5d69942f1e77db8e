"""Optuna RDBStorage on SQLite whose transactions take the write lock first.

Python's sqlite3 driver begins a transaction only at the first write, so
Optuna's read-check-write steps (e.g. two workers popping the same enqueued
trial) could interleave between processes; with ``BEGIN IMMEDIATE`` they are
atomic. A module-level class so Ray can pickle the storage by reference.
"""
from __future__ import annotations

import optuna


class SqliteStorage(optuna.storages.RDBStorage):
    """RDBStorage whose every transaction starts with ``BEGIN IMMEDIATE``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _begin_immediate(self.engine)

    def __setstate__(self, state) -> None:  # engine re-created after unpickling (Ray)
        super().__setstate__(state)
        _begin_immediate(self.engine)


def _begin_immediate(engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


__all__ = ["SqliteStorage"]
