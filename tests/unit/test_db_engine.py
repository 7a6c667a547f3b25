"""shared.db.engine() under the first threads of a process (a worker's pool starting several runs at
once): one engine is made, and its session factory is there as soon as anyone sees the engine."""
from __future__ import annotations

import threading
import time

from shared import db


class _FakeEngine:
    def dispose(self, close: bool = True) -> None:
        pass


def test_threads_racing_for_the_first_engine_make_one_and_see_its_factory(monkeypatch):
    made: list[_FakeEngine] = []

    def slow_make_engine(url: str) -> _FakeEngine:
        time.sleep(0.2)  # a real engine takes a while to build: the window the others arrive in
        made.append(_FakeEngine())
        return made[-1]

    db.dispose()
    monkeypatch.setattr(db, "make_engine", slow_make_engine)
    seen: list[tuple[object, object]] = []

    def first_use() -> None:
        engine = db.engine()
        seen.append((engine, db._factory))

    try:
        threads = [threading.Thread(target=first_use) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(made) == 1
        assert all(engine is made[0] and factory is not None for engine, factory in seen)
    finally:
        db.dispose()
