"""SGLang on a CUDA GPU (opt in: ``pytest -m gpu``; skipped without CUDA and sglang): the engine runs
the shipped APR model through ``python -m sglang.launch_server`` and agrees with the in-process
backend on the same GPU."""

import importlib.util
from pathlib import Path

import pytest
import torch

from apr_mini.backends import TransformersBackend
from apr_mini.serving import launch_server
from apr_mini.engine import run_problems
from apr_mini.data import load_problems
from test_http import free_port

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(importlib.util.find_spec("sglang") is None, reason="needs sglang (pip install -e '.[gpu]')"),
]

CHECKPOINT = Path(__file__).parents[1] / "data" / "cpu-apr"


def test_sglang_server_runs_the_engine_like_the_in_process_backend():
    from transformers import AutoModelForCausalLM

    from apr_mini.tokenizer import load_tokenizer

    problems = load_problems(CHECKPOINT / "problems_val.jsonl", 64)
    with launch_server(CHECKPOINT, kind="sglang", port=free_port(), timeout=600,
                       extra_args=["--attention-backend", "triton"]) as server:
        backend = server.backend()
        remote = run_problems(backend, problems)
        backend.close()
    model = AutoModelForCausalLM.from_pretrained(CHECKPOINT).to("cuda")
    local = run_problems(TransformersBackend(model, load_tokenizer(CHECKPOINT)), problems)
    assert not [f for r in remote for f in r["metrics"]["failures"] if f.startswith("backend error")]
    accuracy = [sum(r["verified"] for r in run) / len(run) for run in (remote, local)]
    assert abs(accuracy[0] - accuracy[1]) <= 0.1   # kernels differ, so greedy ties may break differently
    assert sum(r["metrics"]["n_spawns"] for r in remote) > 0


def test_grpo_rollouts_on_sglang_use_the_weights_just_trained(tmp_path):
    """One GRPO step with SGLang rollouts (update_weights_from_disk), then the server's greedy tree
    equals the in-process model's: the server decodes with the trained weights."""
    from transformers import AutoModelForCausalLM

    from apr_mini import grpo_train, rollouts
    from apr_mini.config import get_grpo_config
    from apr_mini.tokenizer import load_tokenizer

    problems = load_problems(CHECKPOINT / "problems_val.jsonl", 16)
    config = get_grpo_config("tiny", max_steps=1, eval_steps=0, learning_rate=1e-3)
    with launch_server(CHECKPOINT.resolve(), kind="sglang", port=free_port(), timeout=600,
                       extra_args=["--attention-backend", "triton"]) as server:
        on_server = rollouts.ServerRollouts(server, tmp_path / "sync")
        grpo_train.train(CHECKPOINT, "apr", problems, tmp_path / "run", config, progress=False, rollouts=on_server)
        on_server.reload(tmp_path / "run" / "final")
        backend = server.backend()
        remote = run_problems(backend, problems[:4])
        backend.close()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final").cuda()
    local = run_problems(TransformersBackend(model, load_tokenizer(CHECKPOINT)), problems[:4])
    assert [r["result"] for r in remote] == [r["result"] for r in local]
