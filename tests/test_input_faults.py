"""Bad input gets a clear error naming the bad value and where it came from.

Readers (stat.ink CSV, SplatNLP TSV, torch zip), model_params.json, training settings,
and the command-line tools (one ``error:`` line on stderr, exit status 1, nothing written).
"""

import csv
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import bridge.torch_pickle as tp
from bridge.splatnlp import load_splatnlp
from bridge.torch_pickle import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_state_dict,
    load_torch_pickle,
)
from primary.model import PrimaryConfig
from primary.sources import default_vocabs
from primary.splatnlp_tsv import QUOTE_CHARS, read_splatnlp_tsv
from primary.statink import MAX_RECORD_BYTES, PLAYER_SLOTS, StatInkError, read_statink_csv
from primary.training import PrimaryTrainConfig
from sae_jax.config import SAETrainConfig
from tests.fixture_paths import SPLATNLP_FIXTURE
from tests.torch_zip_writer import write_archive, write_state_dict

REPO = Path(__file__).resolve().parents[1]
GOOD_UNITS = json.dumps({"swim_speed_up": 5.7})  # 57 AP of one ability: a legal full build
HEADER = [f"{s}-{c}" for s in PLAYER_SLOTS for c in ("weapon", "abilities")]


def _statink(path, rows: list[list[tuple[str, str]]]) -> Path:
    """A minimal stat.ink CSV: each row lists (weapon, abilities) for A1, A2, ..."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for players in rows:
            cells = [""] * len(HEADER)
            for i, (weapon, abilities) in enumerate(players):
                cells[2 * i], cells[2 * i + 1] = weapon, abilities
            w.writerow(cells)
    return Path(path)


# ------------------------------------------------------------------------------ stat.ink


def test_statink_encoding_error_names_file_and_line(tmp_path):
    path = _statink(tmp_path / "latin.csv", [[("sshooter", GOOD_UNITS)]] * 3)
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"sshooter", b"sshoot\xe9r")  # latin-1 e-acute on line 3
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(StatInkError, match=r"latin\.csv line 3: not UTF-8 text \(byte 0xe9"):
        read_statink_csv(path, quiet=True)


def test_statink_oversized_row_is_an_error_naming_file_and_line(tmp_path):
    path = _statink(tmp_path / "huge.csv", [[("sshooter", GOOD_UNITS)],
                                            [("sshooter", "{" + "x" * MAX_RECORD_BYTES)]])
    with pytest.raises(StatInkError, match=rf"huge\.csv line 3: row longer than "
                                           rf"{MAX_RECORD_BYTES:,} bytes"):
        read_statink_csv(path, quiet=True)
    # an unclosed quote swallowing the rest of the file is caught at the same cap
    text = "\n".join([",".join(HEADER), f"sshooter,\"{{{'x' * 100}"] + ["y" * 1000] * 2000)
    (tmp_path / "quote.csv").write_text(text)
    with pytest.raises(StatInkError, match=r"quote\.csv line 2: row longer than"):
        read_statink_csv(tmp_path / "quote.csv", quiet=True)


def test_statink_pathological_abilities_are_counted_drops(tmp_path):
    before = csv.field_size_limit()
    nested = '{"swim_speed_up": ' * 3000 + "1" + "}" * 3000
    bad = [
        "x" * 200_000,  # over the csv module's default field limit (131,072)
        "{" + '"swim_speed_up": 5.7, ' * 10_000 + '"ink_saver_main": 0}',  # huge object
        nested,  # deep nesting: RecursionError in json
        "[5.7]",  # not an object
        '"swim_speed_up"',
        json.dumps({"swim_speed_up": "5.7"}),  # a string, not a number
        '{"swim_speed_up": 1e999}',  # infinite
        '{"swim_speed_up": NaN}',
        '{"swim_speed_up": ' + "9" * 5000 + "}",  # past Python's int digit limit
        json.dumps({"swim_speed_up": 10 ** 30}),  # huge but finite: more AP than a build
        json.dumps({"swim_speed_up": 5000.0}),  # would overflow int16 AP
    ]
    rows = [[("sshooter", GOOD_UNITS)] * 8] + [[("sshooter", b)] for b in bad]
    builds, summary = read_statink_csv(_statink(tmp_path / "odd.csv", rows), quiet=True)
    assert len(builds) == summary.kept == 8
    assert dict(summary.dropped) == {"malformed_abilities": 9, "wrong_total": 2,
                                     "illegal_slots": 0}
    assert csv.field_size_limit() == before  # the module-global limit is put back


def test_statink_summary_printed_and_warning_when_most_dropped(tmp_path, capsys):
    path = _statink(tmp_path / "mostly_bad.csv", [[
        ("sshooter", GOOD_UNITS), ("no_such_weapon", GOOD_UNITS),
        ("sshooter", "{broken"), ("sshooter", json.dumps({"swim_speed_up": 1.0}))]])
    read_statink_csv(path)
    out = capsys.readouterr().out
    assert "1 builds kept, 3 dropped" in out and "dropped unknown_weapon: 1" in out
    warning = [ln for ln in out.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1
    assert "mostly_bad.csv: 3 of 4 players dropped (75%)" in warning[0]
    assert "malformed_abilities 1, unknown_weapon 1, wrong_total 1" in warning[0]

    fine = _statink(tmp_path / "fine.csv", [[("sshooter", GOOD_UNITS)] * 3
                                            + [("sshooter", "{broken")]])
    read_statink_csv(fine)
    out = capsys.readouterr().out
    assert "3 builds kept, 1 dropped" in out and "warning:" not in out


# ---------------------------------------------------------------------------- TSV


@pytest.mark.parametrize("line, column", [
    ("[" + "1, " * 5000 + "x]\t0", "ability_tags"),
    ("[0]\t" + "7x" * 5000, "weapon_id"),
    ("[" + "9" * 4000 + "]\t0", "ability_tags"),
])
def test_tsv_error_quotes_at_most_a_bounded_part_of_the_field(tmp_path, line, column):
    vocab, wv = default_vocabs()
    path = tmp_path / "long.tsv"
    path.write_text("ability_tags\tweapon_id\n[0]\t0\n" + line + "\n")
    with pytest.raises(ValueError) as err:
        read_splatnlp_tsv(path, vocab, wv)
    message = str(err.value)
    assert f"long.tsv line 3: column {column}" in message
    assert "..." in message and len(message) < len(str(path)) + QUOTE_CHARS + 200


def test_tsv_oversized_field_names_file_and_line(tmp_path):
    vocab, wv = default_vocabs()
    path = tmp_path / "big.tsv"
    path.write_text("ability_tags\tweapon_id\n[0]\t0\n[0]\t" + "1" * (2 << 20) + "\n")
    with pytest.raises(ValueError, match=r"big\.tsv line 3: malformed TSV: field larger"):
        read_splatnlp_tsv(path, vocab, wv)


# ------------------------------------------------------------------------ torch zip


def _with_declared_sizes(src: Path, dst: Path, sizes: dict[str, int]) -> Path:
    """A copy of a zip whose central directory declares other uncompressed sizes."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info.filename))
        for info in new.filelist:
            if info.filename in sizes:
                info.file_size = sizes[info.filename]  # written with a zip64 record on close
    return dst


def _small_pth(path) -> Path:
    return write_state_dict(path, {"a": np.ones((2, 3), np.float32),
                                   "b": np.zeros(4, np.float32),
                                   "c": np.arange(3, dtype=np.float32)})


def test_zip_member_declaring_more_than_the_cap_is_refused(tmp_path):
    good = _small_pth(tmp_path / "good.pth")
    bomb = _with_declared_sizes(good, tmp_path / "bomb.pth", {"archive/data/0": 5 << 30})
    with pytest.raises(CheckpointFormatError,
                       match=r"bomb\.pth: zip member archive/data/0 declares 5,368,709,120 bytes"
                             r" uncompressed, over the cap of 4,294,967,296 bytes per member"):
        load_state_dict(bomb)
    # three members just under the per-member cap: over the total cap together
    near = (4 << 30) - 1
    total = _with_declared_sizes(good, tmp_path / "total.pth", {
        f"archive/data/{k}": near for k in "012"})
    with pytest.raises(CheckpointFormatError, match=r"in all, over the cap of 8,589,934,592"):
        load_state_dict(total)
    assert tp.MAX_MEMBER_BYTES >= 83_000_000 * 4 and tp.MAX_TOTAL_BYTES >= tp.MAX_MEMBER_BYTES


def test_deflated_bomb_is_refused_before_any_member_is_read(tmp_path, monkeypatch):
    path = tmp_path / "deflate.pth"
    write_archive(path, b"\x80\x02}q\x00.")
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", bytes(4 << 20))  # 4 MiB of zeros, ~4 KB compressed
    assert path.stat().st_size < 64 << 10

    def no_read(*args, **kwargs):
        raise AssertionError("a member was read before the size check")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_read)
    with pytest.raises(CheckpointFormatError, match=r"archive/data/0 declares 4,194,304 bytes "
                                                    r"uncompressed, over the cap of 1,048,576"):
        load_torch_pickle(path, max_member_bytes=1 << 20)


def test_garbage_pickle_and_unsafe_pickle_are_value_errors(tmp_path):
    path = write_archive(tmp_path / "junk.pth", b"\x80\x02\xff\xfe not a pickle")
    with pytest.raises(CheckpointFormatError, match=r"junk\.pth: data.pkl is not a readable"):
        load_state_dict(path)
    path = write_archive(tmp_path / "evil.pth", b"\x80\x02cos\nsystem\n.")
    with pytest.raises(ValueError, match="refusing to load global os.system"):
        load_state_dict(path)
    assert issubclass(UnsafeCheckpointError, ValueError)


# ------------------------------------------------------------------ model_params.json

PARAMS = json.loads((SPLATNLP_FIXTURE / "model_params.json").read_text())


def _params_file(tmp_path, change=None, drop=()) -> Path:
    raw = {**PARAMS, **(change or {})}
    for key in drop:
        raw.pop(key)
    path = tmp_path / "model_params.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize("change, drop, message", [
    (None, ("num_heads",), r"missing model parameter\(s\) num_heads \(an integer\)"),
    (None, ("use_layer_norm", "output_dim"),
     r"missing model parameter\(s\) output_dim \(an integer\), use_layer_norm \(true or false"),
    ({"num_heads": "4"}, (), r"num_heads must be an integer, got \"4\" \(a string\)"),
    ({"hidden_dim": 32.0}, (), r"hidden_dim must be an integer, got 32.0 \(a float\)"),
    ({"num_layers": True}, (), r"num_layers must be an integer, got true \(a boolean\)"),
    ({"use_layer_norm": 1}, (), r"use_layer_norm must be true or false, got 1 \(an integer\)"),
    ({"dropout": "0.1"}, (), r"dropout must be a finite number, got \"0.1\" \(a string\)"),
    ({"vocab_size": None}, (), r"vocab_size must be an integer, got null"),
    ({"num_heads": 3}, (), r"hidden_dim 32 is not divisible by num_heads 3"),
    ({"num_layers_mlp": 3}, (), r"num_layers_mlp 3 is not supported"),
    ({"heads": 4}, (), r"unknown model parameters \['heads'\]"),
])
def test_model_params_errors_name_key_file_and_type(tmp_path, change, drop, message):
    path = _params_file(tmp_path, change, drop)
    with pytest.raises(ValueError, match=message) as err:
        PrimaryConfig.from_json(path)
    assert str(err.value).startswith(f"{path}: ")


def test_model_params_optional_keys_and_original_extras(tmp_path):
    full = PrimaryConfig.from_json(_params_file(tmp_path))
    # dropout and pad_token_id are the only keys that may be absent (see from_dict)
    assert PrimaryConfig.from_json(_params_file(tmp_path, drop=("dropout", "pad_token_id"))) \
        == full
    assert PrimaryConfig.from_json(_params_file(tmp_path, {"pad_token_id": None})) == full
    extras = {"use_mixed_precision": False, "num_layers_mlp": 2}  # written by some originals
    assert PrimaryConfig.from_json(_params_file(tmp_path, extras)) == full
    (tmp_path / "broken.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        PrimaryConfig.from_json(tmp_path / "broken.json")


def test_import_without_num_heads_is_refused(tmp_path):
    """It used to import with our default of 8 heads, giving a different model."""
    run_dir = shutil.copytree(SPLATNLP_FIXTURE, tmp_path / "run")
    _params_file(run_dir, drop=("num_heads",))
    with pytest.raises(ValueError, match=r"run/model_params.json: missing model parameter"):
        load_splatnlp(run_dir)


# ----------------------------------------------------------------------- settings


@pytest.mark.parametrize("change, flag", [
    (dict(checkpoint_every=0), "--checkpoint_every must be positive"),
    (dict(log_every=-1), "--log_every must be positive"),
    (dict(eval_builds=0), "--eval_builds must be positive, got 0"),
    (dict(l1_coeff=-1e-3), "--l1_coeff must be >= 0"),
    (dict(clip_max=0.0), "--clip_max must be > 0"),
    (dict(usage_ema_decay=1.0), r"--usage_ema_decay must be in \(0, 1\)"),
    (dict(usage_ema_decay=0.0), r"--usage_ema_decay must be in \(0, 1\)"),
    (dict(dead_threshold=-1e-8), "--dead_threshold must be >= 0"),
    (dict(weight_decay=-0.01), "--weight_decay must be >= 0"),
    (dict(lr_final_fraction=1.5), r"--lr_final_fraction must be in \[0, 1\]"),
    (dict(lr_final_fraction=-0.1), r"--lr_final_fraction must be in \[0, 1\]"),
    (dict(lr=math.nan), "--lr must be a finite number, got nan"),
    (dict(lr=math.inf), "--lr must be a finite number, got inf"),
    (dict(l1_coeff=math.nan), "--l1_coeff must be a finite number"),
    (dict(usage_ema_decay=math.nan), "--usage_ema_decay must be a finite number"),
    (dict(clip_max=math.inf), "--clip_max must be a finite number"),
    (dict(target_usage=math.nan), "--target_usage must be a finite number"),
    (dict(encoder_init_scale=0.0), "--encoder_init_scale must be > 0, got 0.0"),
    (dict(encoder_init_scale=math.inf), "--encoder_init_scale must be a finite number"),
])
def test_sae_settings_that_cannot_work_are_refused(change, flag):
    cfg = dataclasses.replace(SAETrainConfig(), **change)
    with pytest.raises(ValueError, match=flag):
        cfg.validate()


def test_sae_settings_errors_are_one_line_naming_every_flag():
    with pytest.raises(ValueError) as err:
        dataclasses.replace(SAETrainConfig(), lr=math.nan, checkpoint_every=0).validate()
    message = str(err.value)
    assert "\n" not in message
    assert "--lr must be a finite number" in message and "--checkpoint_every" in message


def test_sae_defaults_and_demo_settings_pass():
    from runkit.flags import config_from_flagfile

    SAETrainConfig().validate()
    for name in ("demo.flags", "demo_relu_l1.flags"):
        config_from_flagfile(SAETrainConfig, REPO / "configs" / name).validate()


@pytest.mark.parametrize("change, flag", [
    (dict(lr=math.nan), "--lr must be a finite number"),
    (dict(lr=math.inf), "--lr must be a finite number"),
    (dict(weight_decay=-1.0), "--weight_decay must be >= 0"),
    (dict(weight_decay=math.nan), "--weight_decay must be a finite number"),
    (dict(dropout=1.0), r"--dropout must be in \[0, 1\)"),
    (dict(dropout=-0.1), r"--dropout must be in \[0, 1\)"),
    (dict(dropout=math.nan), "--dropout must be a finite number"),
    (dict(log_every=0), "--log_every must be positive"),
])
def test_primary_settings_that_cannot_work_are_refused(change, flag):
    with pytest.raises(ValueError, match=flag):
        PrimaryTrainConfig(**change)


# ------------------------------------------------------------------------ the CLIs


def _run_all(commands: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    """Run the commands concurrently (each pays the JAX import once)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    procs = {k: subprocess.Popen([sys.executable, "-m", *argv], cwd=REPO, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k, argv in commands.items()}
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        out[k] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


@pytest.mark.slow  # starts every command in its own process
def test_clis_print_one_error_line_and_write_nothing(tmp_path):
    no_heads = shutil.copytree(SPLATNLP_FIXTURE, tmp_path / "no_heads")
    _params_file(no_heads, drop=("num_heads",))
    bomb_run = shutil.copytree(SPLATNLP_FIXTURE, tmp_path / "bomb_run")
    _with_declared_sizes(SPLATNLP_FIXTURE / "model.pth", bomb_run / "model.pth",
                         {"model/data/0": 5 << 30, "archive/data/0": 5 << 30})
    no_sae = tmp_path / "no_sae"
    (no_sae / "sae").mkdir(parents=True)
    (no_sae / "run.json").write_text(json.dumps({"primary_model_dir": str(tmp_path)}))
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "run.json").write_text("{not json")
    out = tmp_path / "out"
    imp, exp, ana = "bridge.import_splatnlp", "bridge.export_saelens", "apps.analyze"
    cases = {
        "import_missing_dir": ([imp, "--run_dir=/nonexistent/run", f"--out={out}/a"],
                               "--run_dir /nonexistent/run is not a directory"),
        "import_no_heads": ([imp, f"--run_dir={no_heads}", f"--out={out}/c"],
                            f"{no_heads}/model_params.json: missing model parameter(s) "
                            "num_heads (an integer)"),
        "import_zip_bomb": ([imp, f"--run_dir={bomb_run}", "--model=model.pth", f"--out={out}/d"],
                            "declares 5,368,709,120 bytes uncompressed, over the cap"),
        "export_missing_dir": ([exp, "--workdir=/nonexistent/run", f"--out={out}/e"],
                               "--workdir /nonexistent/run is not a directory"),
        "export_empty_sae": ([exp, f"--workdir={no_sae}", f"--out={out}/f"],
                             f"{no_sae}/sae is not an SAE directory (no config.json)"),
        "analyze_missing_dir": ([ana, "--workdir=/nonexistent/run"],
                                "--workdir /nonexistent/run is not a directory"),
        "analyze_no_sae": ([ana, f"--workdir={no_sae}"],
                           f"no SAE in {no_sae}/sae: run sae_jax.train first"),
        "analyze_bad_run_json": ([ana, f"--workdir={bad_json}"],
                                 f"{bad_json}/run.json: not valid JSON"),
    }
    results = _run_all({k: argv for k, (argv, _) in cases.items()})
    for name, (_, expected) in cases.items():
        r = results[name]
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1, (name, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, r.stderr)
        assert expected in lines[0], (name, lines[0])
    assert not out.exists()  # no failed start created its output directory
