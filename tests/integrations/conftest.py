"""Shared by the framework adapters' tests.

Each test module skips itself with ``pytest.importorskip`` (and says which extra to install)
when its framework is missing: ``pip install -e '.[test-integrations]'`` installs them all.
Every test here carries the ``integrations`` marker, so ``pytest -m "not integrations"`` runs
the core alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integrations)


def session_bytes(root: Path) -> int:
    """Bytes of a store's session files (its derived ``.cache`` excluded)."""
    return sum(p.stat().st_size for p in (root / "sessions").rglob("*") if p.is_file())
