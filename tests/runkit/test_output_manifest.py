"""The record of a step's outputs tells a finished step from one cut short or damaged."""

from runkit.output_manifest import gaps, seal


def test_a_sealed_step_has_no_gaps_until_a_file_goes_or_changes(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "report" / "cards").mkdir(parents=True)
    (tmp_path / "report" / "index.html").write_text("<html>")
    (tmp_path / "report" / "cards" / "1.html").write_text("card")
    assert gaps(tmp_path, "done.json") == ["done.json (the step never finished)"]
    seal(tmp_path, "done.json", [tmp_path / "a.json", tmp_path / "report",
                                 tmp_path / "not_written.json"])
    assert gaps(tmp_path, "done.json") == []
    (tmp_path / "report" / "cards" / "1.html").write_text("cArd")
    (tmp_path / "a.json").unlink()
    assert gaps(tmp_path, "done.json") == [
        "a.json (missing)", "report/cards/1.html (changed or damaged since it was written)"]


def test_a_damaged_record_is_a_gap(tmp_path):
    (tmp_path / "done.json").write_text("[1, 2")
    assert gaps(tmp_path, "done.json")[0].startswith("done.json (unreadable:")
    (tmp_path / "done.json").write_text("[]")
    assert gaps(tmp_path, "done.json") == ["done.json (no 'files' record)"]
