"""A hostile but fair user: bad arguments, bad files, torn records, dying backends. Every case ends in a
one-line error (exit 2) or a recorded failure, never a traceback or a hang, and never loses finished work."""

import json
import shutil
import warnings

import pytest

from apr_mini.__main__ import main
from apr_mini.data import DataFileError, load_problems
from apr_mini.engine import BackendUnavailable, ScriptedBackend, scripted_from_trees
from apr_mini.inference import EvalSettings, ResumeMismatch, run_eval
from test_backends import CHECKPOINT
from test_engine import bare
from test_inference import KilledAfter
from test_inference import demos  # noqa: F401  (a fixture)

PROBLEMS = str(CHECKPOINT / "problems_val.jsonl")


def fails_in_one_line(argv, capsys, expected: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    last = err.strip().splitlines()[-1]  # argparse prints its usage first
    assert "Traceback" not in err and last.startswith("apr-mini ") and "error:" in last, err
    assert expected in last, err
    return err


@pytest.mark.parametrize("flags, expected", [
    (["--max-live", "0"], "argument --max-live: must be at least 1, got 0"),
    (["--max-batch", "0"], "argument --max-batch: must be at least 1"),
    (["--context", "0"], "argument --context: must be at least 16"),
    (["--n", "-45"], "argument --n: must be at least 1, got -45"),
    (["--n", "0"], "argument --n: must be at least 1"),
    (["--samples", "0"], "argument --samples: must be at least 1"),
    (["--max-thread-tokens", "x"], "argument --max-thread-tokens: not an integer: 'x'"),
    (["--temperature", "-1"], "argument --temperature: must be at least 0.0"),
    (["--samples", "4"], "several samples per problem need a temperature > 0"),
    (["--backend", "openai"], "--backend openai needs --url"),
])
def test_bad_infer_arguments_are_one_line_errors(flags, expected, tmp_path, capsys):
    argv = ["infer", "--checkpoint", str(CHECKPOINT), "--method", "apr", "--out", str(tmp_path / "r.jsonl"), *flags]
    fails_in_one_line(argv, capsys, expected)


@pytest.mark.parametrize("content, expected", [
    ("", "holds no problems"),
    ('{"nums": [3, 4, 5]}\n', "needs both 'nums' and 'target'"),
    ('{"nums": [3, "4x", 5], "target": 12}\n', "nums must be a list of integers"),
    ('[3, 4, 5]\n', "a list, not a JSON object"),
    ('{"nums": [1, 2, 3, 4, 5, 6, 7], "target": 12}\n', "2..6 numbers"),
    ('{"nums": [], "target": 12}\n', "2..6 numbers"),
    ('{"nums": [3, -4, 5], "target": 12}\n', "numbers >= 0"),
    ('{"nums": [3, 4, 5], "target": 12}\n{"nums": [3, 4, 5], "tar', "problems.jsonl:2: not a JSON line"),
])
def test_bad_problem_files_are_one_line_errors(content, expected, tmp_path, capsys):
    problems = tmp_path / "problems.jsonl"
    problems.write_text(content)
    fails_in_one_line(["infer", "--checkpoint", str(CHECKPOINT), "--method", "apr", "--problems", str(problems),
                       "--out", str(tmp_path / "r.jsonl")], capsys, expected)


def test_problems_outside_the_models_task_are_run_with_a_warning(tmp_path, capsys):
    problems = tmp_path / "problems.jsonl"
    problems.write_text('{"nums": [1000, 2000, 3000], "target": 5000}\n')
    with pytest.warns(UserWarning, match="outside the task tiny-apr was trained on"):
        main(["infer", "--checkpoint", str(CHECKPOINT), "--method", "sosp", "--problems", str(problems),
              "--max-thread-tokens", "20", "--out", str(tmp_path / "r.jsonl"), "--no-progress"])
    assert "| tiny-apr sosp |" in capsys.readouterr().out


def test_missing_and_damaged_checkpoints_are_one_line_errors(tmp_path, capsys):
    argv = lambda checkpoint: ["infer", "--checkpoint", str(checkpoint), "--method", "apr", "--problems", PROBLEMS,
                               "--out", str(tmp_path / "r.jsonl")]
    fails_in_one_line(argv(tmp_path / "nowhere"), capsys, "is not a model folder (no config.json)")
    (tmp_path / "empty").mkdir()
    fails_in_one_line(argv(tmp_path / "empty"), capsys, "is not a model folder")
    for name, damage in (("truncated", lambda b: b[: len(b) // 2]), ("garbage", lambda b: b"\x00garbage" * 100)):
        broken = tmp_path / name
        shutil.copytree(CHECKPOINT, broken)
        weights = broken / "model.safetensors"
        weights.write_bytes(damage(weights.read_bytes()))
        fails_in_one_line(argv(broken), capsys, f"cannot load the model in {broken}")
    (tmp_path / "no-weights").mkdir()
    shutil.copy(CHECKPOINT / "config.json", tmp_path / "no-weights")
    fails_in_one_line(argv(tmp_path / "no-weights"), capsys, "has no weights")


def test_missing_files_and_unwritable_outputs_are_one_line_errors(tmp_path, capsys):
    fails_in_one_line(["infer", "--checkpoint", str(CHECKPOINT), "--method", "apr", "--problems",
                       str(tmp_path / "none.jsonl")], capsys, "none.jsonl not found")
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    fails_in_one_line(["sft", "--profile", "tiny", "--kind", "sosp", "--data", str(tmp_path / "no-data"),
                       "--out", str(in_the_way / "run")], capsys, "a-file")
    fails_in_one_line(["compare", str(tmp_path / "x.jsonl"), str(tmp_path / "y.jsonl")], capsys, "not found")


def test_infer_takes_its_default_checkpoint_from_the_profile(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("APR_PROFILE", "tiny")
    main(["infer", "--method", "apr", "--n", "1", "--max-thread-tokens", "20", "--out", str(tmp_path / "r.jsonl"),
          "--no-progress"])
    assert "| tiny-apr apr |" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Records files: torn lines, missing settings, a backend that goes away
# ---------------------------------------------------------------------------------------------

def test_a_torn_last_line_is_dropped_and_its_problem_redone(demos, tmp_path):  # noqa: F811
    problems, trees = demos
    script = scripted_from_trees(trees)
    out = tmp_path / "r.jsonl"
    full = run_eval(ScriptedBackend(script), problems, out, progress=False)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])  # killed while writing the fifth record
    with pytest.warns(UserWarning, match="dropped a torn last line"):
        again = run_eval(ScriptedBackend(script), problems, out, progress=False)
    assert [bare(r["tree"]) for r in again] == [bare(r["tree"]) for r in full]
    out.write_text("".join(lines[:2]) + "{oops\n" + "".join(lines[3:]))  # damage in the middle: not guessed at
    with pytest.raises(DataFileError, match=r"r.jsonl:3: not a JSON line"):
        run_eval(ScriptedBackend(script), problems, out, progress=False)


def test_records_without_their_settings_file_are_not_resumed(demos, tmp_path, capsys):  # noqa: F811
    problems, trees = demos
    out = tmp_path / "r.jsonl"
    run_eval(ScriptedBackend(scripted_from_trees(trees)), problems, out, progress=False)
    out.with_suffix(".settings.json").unlink()
    with pytest.raises(ResumeMismatch, match="settings file r.settings.json is missing"):
        run_eval(ScriptedBackend(scripted_from_trees(trees)), problems, out, EvalSettings(method="sosp"), progress=False)
    assert not out.with_suffix(".settings.json").exists()  # not rewritten under the new settings


def test_a_refused_resume_does_not_load_the_model(tmp_path, capsys, monkeypatch):
    from apr_mini import inference

    out = tmp_path / "r.jsonl"
    out.write_text('{"id": 0, "sample": 0}\n')
    monkeypatch.setattr(inference, "open_backend", lambda *a, **k: pytest.fail("loaded the model first"))
    fails_in_one_line(["infer", "--checkpoint", str(CHECKPOINT), "--method", "sosp", "--problems", PROBLEMS,
                       "--out", str(out)], capsys, "settings file r.settings.json is missing")


def test_an_unreachable_backend_stops_the_run_without_recording_unfinished_problems(demos, tmp_path):  # noqa: F811
    problems, trees = demos
    script = scripted_from_trees(trees)
    out = tmp_path / "r.jsonl"
    full_steps = len(run_eval(ScriptedBackend(script), problems, tmp_path / "full.jsonl", progress=False))
    with pytest.raises(BackendUnavailable):
        run_eval(KilledAfter(script, 6, BackendUnavailable), problems, out, progress=False)
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(kept) < full_steps and all(not r["metrics"]["failures"] for r in kept)
    records = run_eval(ScriptedBackend(script), problems, out, progress=False)
    assert [r["id"] for r in records] == list(range(len(problems)))


def test_load_problems_names_the_bad_problem(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"nums": [3, 4, 5], "target": 12}\n{"nums": [3, 4, true], "target": 12}\n')
    with pytest.raises(DataFileError, match=r"p.jsonl: problem 2: nums must be a list of integers"):
        load_problems(bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_problems(bad, 1)) == 1  # only what is asked for is read as problems
