"""Progress: a tqdm bar on a terminal; in a file or pipe, plain lines at the interval."""

import io

import pytest
from tqdm import tqdm

from runkit.progress import MAX_SECONDS, MIN_SECONDS, PlainProgress, show_progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_terminal_gets_a_bar_and_a_file_gets_plain_lines():
    assert isinstance(show_progress(total=3, file=Terminal()), tqdm)
    plain = show_progress(total=3, file=io.StringIO())
    assert isinstance(plain, PlainProgress) and not isinstance(plain, tqdm)
    # Disabled: a silent tqdm either way (nothing written, the same interface).
    quiet = io.StringIO()
    bar = show_progress(range(3), file=quiet, disable=True)
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2] and quiet.getvalue() == ""


def test_the_bar_on_a_terminal_redraws_with_carriage_returns():
    # What a file must not get: tqdm redraws its line in place.
    out = Terminal()
    with show_progress(total=3, desc="stage", file=out, mininterval=0) as bar:
        bar.update(3)
    assert "\r" in out.getvalue()


def test_lines_every_tenth_and_not_more_often_than_min_seconds():
    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(total=1000, desc="primary training", unit="step", file=out,
                        clock=clock)
    for i in range(1000):
        clock.now += 0.5  # 2 steps a second: 10% (100 steps) takes 50 s > MIN_SECONDS
        bar.update(1)
        if i == 449:
            bar.set_postfix(loss="0.1234")
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 10  # 100, 200, ..., 900, then the last line at close
    assert lines[0] == "primary training: 100/1,000 step (10%) in 50s, 2 step/s, ETA 7m30s"
    assert lines[4] == ("primary training: 500/1,000 step (50%) in 4m10s, 2 step/s, ETA 4m10s, "
                        "loss=0.1234")
    assert lines[-1] == ("primary training: done, 1,000/1,000 step (100%) in 8m20s, 2 step/s, "
                         "loss=0.1234")


def test_a_fast_stage_waits_min_seconds_and_a_slow_one_reports_every_max_seconds():
    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(total=100_000, desc="fast", file=out, clock=clock)
    for _ in range(100_000):  # 10% every second: a line only each MIN_SECONDS
        clock.now += 1e-4
        bar.update(1)
    bar.close()
    assert len(out.getvalue().splitlines()) == 1  # 10 s in all: only the last line

    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(total=1000, desc="slow", file=out, clock=clock)
    for _ in range(20):  # 1% a minute: 10% would take 10 min, more than MAX_SECONDS
        clock.now += 60
        bar.update(10)
    times = [line.split(" in ")[1].split(",")[0] for line in out.getvalue().splitlines()]
    assert MAX_SECONDS == 300 and times == ["5m00s", "10m00s", "15m00s", "20m00s"]


def test_unknown_total_reports_every_min_seconds():
    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(desc="completing", unit="step", file=out, clock=clock)
    for _ in range(100):
        clock.now += 1
        bar.update(1)
    bar.close()
    assert MIN_SECONDS == 30 and out.getvalue().splitlines() == [
        "completing: 30 step in 30s, 1 step/s", "completing: 60 step in 1m00s, 1 step/s",
        "completing: 90 step in 1m30s, 1 step/s", "completing: done, 100 step in 1m40s, 1 step/s"]


@pytest.mark.parametrize("leave, slow, lines", [(True, False, 1), (False, False, 0),
                                                (False, True, 2)])
def test_the_last_line_where_a_bar_would_stay(leave, slow, lines):
    """``leave=False``: a bar vanishes at the end; so does a quick stage's report, but a
    stage that printed a line says that it ended."""
    out, clock = io.StringIO(), Clock()
    items = []
    for x in PlainProgress(range(4), desc="s", file=out, leave=leave, clock=clock):
        clock.now += 20 if slow else 1
        items.append(x)
    assert items == [0, 1, 2, 3]
    assert len(out.getvalue().splitlines()) == lines


def test_sizes_and_resumed_counts():
    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(total=4 * 2**20, initial=2**20, desc="model.pt", unit="B",
                        unit_scale=True, unit_divisor=1024, leave=False, file=out, clock=clock)
    clock.now = 40
    bar.update(2**20)  # the rate counts this session's bytes only, not the resumed start
    bar.close()
    assert out.getvalue().splitlines() == [
        "model.pt: 2.00MB/4.00MB (50%) in 40s, 25.6kB/s, ETA 1m20s",
        "model.pt: done, 2.00MB/4.00MB (50%) in 40s, 25.6kB/s"]


def test_write_and_context_manager():
    out, err = io.StringIO(), io.StringIO()
    with PlainProgress(total=2, desc="epochs", file=err) as bar:
        bar.write("epoch 1/2: val loss 0.5", file=out)
        bar.update(2)
    assert out.getvalue() == "epoch 1/2: val loss 0.5\n"
    assert err.getvalue().startswith("epochs: done, 2/2 it (100%)")
    assert bar.closed
