"""The OpenAI-compatible client against a real ``transformers serve`` on CPU serving the tiny APR
checkpoint, and against a server that is not there."""

import socket

import pytest

from apr_mini.backends import TransformersBackend
from apr_mini.serving import OpenAIBackend, ServerUnreachable, launch_server
from apr_mini.engine import run_problems
from apr_mini.data import load_problems, read_jsonl
from apr_mini.inference import run_eval
from test_backends import CHECKPOINT
from test_engine import bare


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    with launch_server(CHECKPOINT, kind="transformers", port=free_port(), timeout=240) as running:
        yield running


def test_engine_over_http_builds_the_same_trees_as_in_process(server):
    from transformers import AutoModelForCausalLM

    from apr_mini.tokenizer import load_tokenizer

    problems = load_problems(CHECKPOINT / "problems_val.jsonl", 2)
    backend = server.backend(concurrency=4)
    backend.check()
    try:
        remote = run_problems(backend, problems)
    finally:
        backend.close()
    model = AutoModelForCausalLM.from_pretrained(CHECKPOINT)
    local = run_problems(TransformersBackend(model, load_tokenizer(CHECKPOINT)), problems)
    assert [bare(r["tree"]) for r in remote] == [bare(r["tree"]) for r in local]
    assert any(r["metrics"]["n_spawns"] for r in remote)
    assert all(r["metrics"]["failures"] == [] for r in remote)


def test_a_dead_server_is_a_clear_error_and_stops_the_run():
    backend = OpenAIBackend(f"http://127.0.0.1:{free_port()}", str(CHECKPOINT), retries=1, timeout=5)
    with pytest.raises(ServerUnreachable, match="transformers serve"):
        backend.check()
    problems = load_problems(CHECKPOINT / "problems_val.jsonl", 3)
    with pytest.raises(ServerUnreachable, match="stopped answering .*ConnectError"):
        run_problems(backend, problems)  # a transport failure is not the model's: no problem is finished by it
    backend.close()


def test_a_server_killed_mid_run_loses_nothing_and_the_rerun_completes_every_problem(tmp_path):
    problems = load_problems(CHECKPOINT / "problems_val.jsonl", 6)
    out, port = tmp_path / "records.jsonl", free_port()

    class KillsItsServer:
        """Stops the server once the first problem is written, as a SIGTERM mid-run would."""

        def __init__(self, server):
            self.server, self.backend = server, server.backend(concurrency=2, retries=1, timeout=10)
            self.context_window = self.backend.context_window

        def step(self, requests):
            if out.exists() and out.read_text().strip():
                self.server.stop()
            return self.backend.step(requests)

        def release(self, key):
            pass

    with launch_server(CHECKPOINT, kind="transformers", port=port, timeout=240) as first:
        with pytest.raises(ServerUnreachable, match="stopped answering"):
            run_eval(KillsItsServer(first), problems, out, max_live=2, progress=False)
    kept = read_jsonl(out)
    assert 1 <= len(kept) < len(problems)
    assert not any("backend error" in f for r in kept for f in r["metrics"]["failures"])
    with launch_server(CHECKPOINT, kind="transformers", port=port, timeout=240) as second:
        backend = second.backend(concurrency=2)
        records = run_eval(backend, problems, out, max_live=2, progress=False)
        backend.close()
    assert [r["id"] for r in records] == list(range(len(problems)))
    final = {r["id"]: r for r in records}
    assert all(final[r["id"]] == r for r in kept)  # finished problems were not redone
    assert not any("backend error" in f for r in records for f in r["metrics"]["failures"])


def test_cli_reports_a_dead_server_without_a_traceback(tmp_path, capsys):
    from apr_mini.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["infer", "--checkpoint", str(CHECKPOINT), "--method", "apr", "--problems",
              str(CHECKPOINT / "problems_val.jsonl"), "--backend", "openai", "--url",
              f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path / "runs.jsonl")])
    assert exited.value.code == 2
    assert "no OpenAI-compatible completion server answered" in capsys.readouterr().err


def test_grpo_rollouts_through_a_server_sync_the_weights_each_step(server, tmp_path):
    """The paper's RL setup (one process trains, a server decodes) on CPU: ``transformers serve``
    cannot reload weights, so the reload is recorded here; tests/test_sglang.py checks a real one."""
    from apr_mini import grpo_train, rollouts
    from apr_mini.config import get_grpo_config

    reloads = []
    on_server = rollouts.ServerRollouts(server, tmp_path / "sync", reload=reloads.append)
    config = get_grpo_config("tiny", max_steps=2, eval_steps=0, reward="thread_penalty")
    problems = load_problems(CHECKPOINT.parent / "countdown-cpu" / "problems_train.jsonl", 10)
    metrics = grpo_train.train(CHECKPOINT, "apr", problems, tmp_path / "run", config, progress=False, rollouts=on_server)
    assert metrics["steps"] == 2 and reloads == [tmp_path / "sync"] * 2
    assert (tmp_path / "sync" / "model.safetensors").exists()


def test_threads_spread_over_several_servers_and_each_thread_stays_on_one(server):
    from apr_mini.tokenizer import load_tokenizer
    from transformers import AutoModelForCausalLM

    class Recording(OpenAIBackend):
        def _server_for(self, key):
            chosen = super()._server_for(key)
            self.routes.setdefault(key, set()).add(chosen)
            return chosen

    problems = load_problems(CHECKPOINT / "problems_val.jsonl", 4)
    with launch_server(CHECKPOINT, kind="transformers", port=free_port(), timeout=240) as second:
        backend = Recording([server.base_url, second.base_url], str(CHECKPOINT), concurrency=4)
        backend.routes = {}
        backend.check()
        remote = run_problems(backend, problems)
        backend.close()
    assert all(len(servers) == 1 for servers in backend.routes.values())  # a thread's calls: one server
    assert {s for servers in backend.routes.values() for s in servers} == {0, 1}  # both servers worked
    assert any(len(thread["calls"]) > 1 for r in remote for thread in [r["tree"]])  # a joined thread came back
    model = AutoModelForCausalLM.from_pretrained(CHECKPOINT)
    local = run_problems(TransformersBackend(model, load_tokenizer(CHECKPOINT)), problems)
    assert [bare(r["tree"]) for r in remote] == [bare(r["tree"]) for r in local]
