"""The crash test (`scripts/crash_test.py`, run at length by `scripts/crash-test.sh`) as part of
the suite: a few kill -9s at random moments under QoS 1 and QoS 2 load from paho-mqtt, in each
durable mode, checked against what the mode promises."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import is_ringmq

pytestmark = pytest.mark.skipif(not is_ringmq(), reason="kills ringmq and reads its promise")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["sync", "periodic"])
def test_kill_9_under_load_loses_nothing_the_mode_promises(mode):
    binary = os.environ.get("RINGMQ_BIN") or str(ROOT / "target" / "debug" / "ringmq")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "crash_test.py"), "--binary", binary,
         "--mode", mode, "--kills", "4", "--seed", "1", "--json"],
        capture_output=True, text=True, timeout=110)
    assert done.stdout.strip(), done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["checked"] > 100, report
    assert report["missing"] == 0, report
