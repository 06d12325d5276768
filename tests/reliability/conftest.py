"""Fixtures for the reliability tests: the app and the standalone PayTR emulator as real
processes (`python main.py ...`), created by factories and always stopped at teardown.

A test builds its servers first (so it knows their ports and settings), seeds the
database, and starts them when it is ready.
"""

from __future__ import annotations

import pytest

from .support import AppServer, EmulatorServer


@pytest.fixture
def processes():
    """Every server a test made; stopped (gracefully, then by force) at teardown."""
    made = []
    yield made
    problems = []
    for server in reversed(made):
        try:
            server.stop()
        except Exception as exc:  # stop the others anyway
            problems.append(f"{server.name}: {exc!r}")
    assert not problems, problems


@pytest.fixture
def make_app(tmp_path, processes):
    """make_app(**env) -> an AppServer, not started yet; one per test."""

    def make(**env) -> AppServer:
        server = AppServer(tmp_path, **env)
        processes.append(server)
        return server

    return make


@pytest.fixture
def make_emulator(tmp_path, processes):
    """make_emulator(app) -> the standalone emulator calling `app` back, not started yet."""

    def make(app: AppServer, **options) -> EmulatorServer:
        server = EmulatorServer(tmp_path, app.callback_url, **options)
        processes.append(server)
        return server

    return make
