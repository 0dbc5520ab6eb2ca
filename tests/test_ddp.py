"""Data-parallel SFT on CPU: the same ``sft`` command under ``accelerate launch`` with 2 processes
(gloo), as it would run on several GPUs. The recipe (global batch, steps, tokens) is unchanged, the loss
matches one process, and only the main process writes checkpoints, the curve and the metrics."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apr_mini.config import PROFILES
from apr_mini.data import build_dataset

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                                reason="accelerate is not installed")
LOSS_TOLERANCE = 0.01  # relative; measured: equal to 1e-6 (the two runs see the same global batches)


def sft(out: Path, data: Path, *launcher: str) -> subprocess.CompletedProcess:
    command = [*launcher, "-m", "apr_mini", "sft", "--profile", "tiny", "--kind", "sosp", "--data", str(data),
               "--max-tokens", "20000", "--eval-every", "4", "--eval-problems", "2", "--out", str(out), "--threads", "1"]
    env = {**os.environ, "APR_PROFILE": "tiny", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_two_processes_train_the_same_recipe_as_one(tmp_path):
    data = tmp_path / "data"
    profile = PROFILES["tiny"].replace(data=PROFILES["tiny"].data.__class__(n_train=40, n_val=6, seed=0))
    build_dataset(profile, data, progress=False)
    accelerate = str(Path(sys.executable).parent / "accelerate")
    ddp = sft(tmp_path / "ddp", data, accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = sft(tmp_path / "one", data, sys.executable)
    assert one.returncode == 0, one.stderr[-3000:]
    runs = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("ddp", "one")}
    assert runs["ddp"]["steps"] == runs["one"]["steps"]
    # the same blocks, except where the distributed sampler pads an epoch's end to split it evenly
    assert abs(runs["ddp"]["tokens_seen"] - runs["one"]["tokens_seen"]) <= 0.05 * runs["one"]["tokens_seen"]
    final = {name: m["final_loss"] for name, m in runs.items()}
    assert abs(final["ddp"] - final["one"]) <= LOSS_TOLERANCE * final["one"], final
    assert ddp.stdout.count("trained ") == 1  # one process reports
    curve = [json.loads(line)["step"] for line in (tmp_path / "ddp" / "curve.jsonl").read_text().splitlines()]
    assert curve == sorted(set(curve))  # each point written once, by the main process
    assert [p.name for p in (tmp_path / "ddp").iterdir() if p.name.startswith("checkpoint-")]
