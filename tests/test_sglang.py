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
