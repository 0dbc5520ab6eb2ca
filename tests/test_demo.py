"""`make demo`'s job (apr_mini.demo) on the tiny test models: both methods, two windows, one tree drawn."""

import pytest

from apr_mini.config import UserFacingError
from apr_mini.demo import demo_table, run_demo


def test_the_demo_runs_both_methods_at_two_windows_and_draws_a_tree(tmp_path, capsys):
    result = run_demo("tiny", n=3, tight=256, out=tmp_path, progress=False)
    assert [(r["method"], r["window"]) for r in result["rows"]] == [("SoS+", 1024), ("SoS+", 256), ("APR", 1024),
                                                                   ("APR", 256)]
    assert all(r["n"] == 3 and 0 <= r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] <= 1 for r in result["rows"])
    assert set(result["differences"]) == {1024, 256}
    assert (tmp_path / "tiny" / "apr_tree.html").stat().st_size > 0
    printed = capsys.readouterr().out
    assert demo_table(result["rows"]) in printed and "notebook 06" in printed
    again = run_demo("tiny", n=3, tight=256, out=tmp_path, progress=False)  # resumed: the same numbers
    assert again["rows"] == result["rows"]


def test_the_demo_refuses_a_profile_without_shipped_models(tmp_path):
    with pytest.raises(UserFacingError, match="shipped models"):
        run_demo("gpu", out=tmp_path)
