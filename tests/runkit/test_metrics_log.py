"""The metrics log survives a torn last line and restarts exactly at a checkpoint's step."""

import json

from runkit.metrics_log import MetricsLog


def test_torn_last_line_is_skipped_and_trimmed(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (5, 10, 15):
        log.append({"step": step, "loss": 1.0 / step})
    with open(log.path, "a") as f:
        f.write('{"step": 20, "lo')  # a kill in mid-write
    assert [r["step"] for r in log.rows()] == [5, 10, 15]
    dropped = log.restart_at(10)
    assert dropped == 2  # step 15 (after the checkpoint) and the torn line
    lines = log.path.read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [5, 10]
    log.append({"step": 15, "loss": 0.5})
    assert [r["step"] for r in log.rows()] == [5, 10, 15]


def test_fresh_start_empties_the_log(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"step": 1})
    log.restart_at(None)
    assert log.rows() == [] and log.path.read_text() == ""
