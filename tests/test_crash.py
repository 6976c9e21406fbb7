"""Writers killed with SIGKILL at random points: every append that returned survives."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from convstore import Store

from .conftest import start_python

# The writer prints an id only after append() returned: that is the acknowledgement.
WRITER = """
import sys
from convstore import Store
path, tag = sys.argv[1], sys.argv[2]
with Store(path) as st:
    s = st.session("crash")
    i = 0
    while True:
        if i % 5 == 0:
            ms = s.extend([{"role": "user", "content": f"{tag}-{i}-{j}" * 20} for j in range(3)])
            for m in ms:
                print(m.id, flush=True)
        else:
            print(s.append("assistant", f"{tag}-{i}" * 50).id, flush=True)
        i += 1
"""


def test_sigkilled_writers_lose_only_the_append_in_flight(store: Store, store_path: Path) -> None:
    store.create_session("crash")
    rng = random.Random(1234)
    acked: set[str] = set()
    kills = 0
    for round_ in range(12):
        procs = [
            start_python(WRITER, str(store_path), f"r{round_}w{w}", stdout=-1) for w in range(2)
        ]
        time.sleep(0.4 + rng.random() * 0.6)
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        for p in procs:
            out, _ = p.communicate()
            # A line cut mid-print was not a complete acknowledgement.
            acked.update(line for line in out.splitlines() if len(line) == 26)
        with Store(store_path) as fresh:
            present = {m.id for m in fresh.session("crash").messages()}
        missing = acked - present
        assert not missing, f"round {round_}: {len(missing)} acknowledged appends lost"
    assert kills == 24 and len(acked) > 100
    with Store(store_path) as fresh:
        report = fresh.check(repair=True)
        assert all(i.repaired for i in report.issues), str(report)
        assert fresh.check().ok
        ids = [m.id for m in fresh.session("crash").messages()]
        assert len(ids) == len(set(ids))
