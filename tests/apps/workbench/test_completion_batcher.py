"""Build-lab requests completed together: the same answers as alone (a smaller case, on
programs its other tests compile, is in test_serve.py), the batcher's window, a failing batch."""

import threading
import time

import numpy as np
import pytest

from apps.workbench.completion_batcher import CompletionBatcher
from apps.workbench.lab import LabRequest, complete_lab, complete_labs, lab_request
from apps.workbench.run_state import RunData
from apps.workbench.server import create_app
from primary.vocab import ABILITIES
from tests.apps.workbench.workbench_fixture import ANALYSIS_BUILDS, make_run, scores_apart

# Different weapons and builds; plain, and with one, two and three features set.
BODIES = [
    {"weapon": "Splattershot", "abilities": {"swim_speed_up": 10, "ink_saver_main": 6}},
    {"weapon": "Splat Roller", "abilities": {"ninja_squid": 10},
     "edits": [{"feature": 7, "value": 3.0}, {"feature": 40, "value": 0.0}]},
    {"weapon": "Splat Charger", "abilities": {"quick_respawn": 13, "comeback": 10},
     "edits": [{"feature": 100, "value": 2.5}]},
    {"weapon": "Splattershot", "abilities": {"swim_speed_up": 10, "ink_saver_main": 6},
     "edits": [{"feature": 5, "value": 0.0}]},
    {"weapon": "Luna Blaster", "abilities": {"run_speed_up": 19},
     "edits": [{"feature": 1, "value": 1.0}, {"feature": 2, "value": 1.0},
               {"feature": 3, "value": 0.0}]},
    {"weapon": "Splat Roller", "abilities": {}},
    {"weapon": "Luna Blaster", "abilities": {"stealth_jump": 10},
     "edits": [{"feature": 9, "value": 4.0}, {"feature": 11, "value": 0.5}]},
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return RunData(make_run(tmp_path_factory.mktemp("run")), num_builds=ANALYSIS_BUILDS)


@pytest.mark.slow  # compiles every batched shape it uses (about 30 s); test_serve.py holds
# a smaller case on programs its other tests compile
def test_batched_answers_are_the_single_answers(run):
    reqs = [lab_request(b, run) for b in BODIES]
    run.completions.clear()
    alone = [complete_lab(run, r) for r in reqs]
    run.completions.clear()
    together = complete_labs(run, reqs)  # 7 requests: padded to a batch of 8
    assert len(together) == len(alone)
    assert len({str(a["build"]["pieces"]) for a in alone}) >= 5  # the requests differ
    for body, single, batched in zip(BODIES, alone, together):
        single, single_scores = scores_apart(single)
        batched, batched_scores = scores_apart(batched)
        assert batched == single, body
        # A build's score sums logits that XLA computes for more rows per call in a batch,
        # rounding the last bits of a float32 differently (measured: ~5e-7 relative).
        assert batched_scores == pytest.approx(single_scores, rel=1e-5, abs=1e-5)
    # each steered answer has its own edits and its own diff against its plain build
    for body, answer in zip(BODIES, together):
        assert answer["edits"] == body.get("edits", [])
        assert ("diff" in answer) == bool(body.get("edits"))


class _Recorder:
    """A stand-in for complete_labs that records its batches; ``hold`` keeps the first
    batch running until released; ``fail_on`` makes any batch holding that weapon fail."""

    def __init__(self, hold: bool = False, fail_on=None):
        self.batches: list[list] = []
        self.running = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.fail_on = fail_on

    def __call__(self, run, reqs):
        self.batches.append([r.weapon for r in reqs])
        self.running.set()
        assert self.release.wait(30)
        if self.fail_on in [r.weapon for r in reqs]:
            raise ValueError(f"weapon {self.fail_on} failed")
        return [{"weapon": r.weapon} for r in reqs]


def _req(weapon: int) -> LabRequest:
    return LabRequest(weapon, np.zeros(len(ABILITIES), np.int64), (), ())


def test_the_window_gathers_requests_and_a_full_batch_goes_at_once():
    complete = _Recorder()
    batcher = CompletionBatcher(None, 0.3, max_batch=4, complete=complete)
    try:
        first = [batcher.submit(_req(w)) for w in (1, 2, 3)]
        assert [f.result(30) for f in first] == [{"weapon": w} for w in (1, 2, 3)]
        assert complete.batches == [[1, 2, 3]]  # one batch, after the window
        # A full batch does not wait: with a minute's window, 4 requests go at once.
        slow = CompletionBatcher(None, 60.0, max_batch=4, complete=complete)
        t0 = time.monotonic()
        full = [slow.submit(_req(w)) for w in (4, 5, 6, 7)]
        assert [f.result(30)["weapon"] for f in full] == [4, 5, 6, 7]
        assert time.monotonic() - t0 < 30 and complete.batches[-1] == [4, 5, 6, 7]
        slow.close()
    finally:
        batcher.close()


def test_requests_that_arrive_during_a_batch_form_the_next():
    # ... together with those sent within the window after it ends (by the clients it
    # answered, under steady load)
    complete = _Recorder(hold=True)
    batcher = CompletionBatcher(None, 1.0, max_batch=8, complete=complete)
    try:
        lone = batcher.submit(_req(1))
        assert complete.running.wait(30)  # the lone request's batch is running
        later = [batcher.submit(_req(w)) for w in (2, 3, 4)]
        complete.release.set()
        assert lone.result(30) == {"weapon": 1}
        later.append(batcher.submit(_req(5)))
        assert [f.result(30)["weapon"] for f in later] == [2, 3, 4, 5]
        assert complete.batches == [[1], [2, 3, 4, 5]]
    finally:
        batcher.close()


def test_a_failing_batch_is_redone_alone_and_only_its_request_fails():
    complete = _Recorder(fail_on=2)
    batcher = CompletionBatcher(None, 0.3, max_batch=8, complete=complete)
    try:
        futures = [batcher.submit(_req(w)) for w in (1, 2, 3)]
        assert futures[0].result(30) == {"weapon": 1} and futures[2].result(30) == {"weapon": 3}
        with pytest.raises(ValueError, match="weapon 2 failed"):
            futures[1].result(30)
        assert complete.batches == [[1, 2, 3], [1], [2], [3]]
    finally:
        batcher.close()


def test_the_window_setting_reaches_the_batcher(tmp_path):
    workdir = make_run(tmp_path / "run")
    assert create_app(workdir, batch_window_ms=0).state.workbench.batcher is None
    assert create_app(workdir, batch_window_ms=7).state.workbench.batcher.window_s == 0.007
    with pytest.raises(ValueError, match="window_s"):
        CompletionBatcher(None, -1.0)
