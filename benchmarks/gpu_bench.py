"""The GPU check's measurements, one table: SFT tokens/s and peak memory per model preset, and the
spawn/join engine in-process against SGLang on the same problems and model.

Run:  python benchmarks/gpu_bench.py  [--presets t4 gpu] [--steps 20] [--problems 64]   (gpu_check.sh runs it)

- SFT: the preset's model, fresh, on random packed blocks of its full context, AdamW, bf16 (fp16 where the
  GPU has no bf16, as on a T4), ``--steps`` timed steps after 3 warm-up steps; peak memory is
  ``torch.cuda.max_memory_allocated``.
- Engine: the shipped cpu APR model on the first ``--problems`` validation problems, greedy, through
  the engine with the in-process backend and with an SGLang server (triton attention: the cpu model's
  head_dim is 32); decoded tokens per second of wall time, and their ratio.
Without CUDA it runs what it can on the device it has (for trying the script; the numbers are not the
GPU's), and says what it skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import time


def sft_throughput(preset: str, steps: int, device: str) -> dict:
    import torch

    from apr_mini.models import MODEL_PRESETS, build_model
    from apr_mini.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    model = build_model(preset, tokenizer).to(device)
    context = MODEL_PRESETS[preset].context
    on_cuda = device == "cuda"
    dtype = torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float16 if on_cuda else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
    batch = torch.randint(3, len(tokenizer), (2, context), device=device)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()

    def step():
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = model(input_ids=batch, labels=batch).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if on_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if on_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"what": f"SFT, {preset} preset ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M, context {context}, "
                    f"{str(dtype).replace('torch.', '') if dtype else 'fp32'})",
            "tokens/s": round(steps * batch.numel() / seconds),
            "peak memory (GB)": round(torch.cuda.max_memory_allocated() / 1e9, 2) if on_cuda else None}


def engine_throughput(problems: int, device: str) -> list[dict]:
    from apr_mini.data import load_problems
    from apr_mini.engine import run_problems
    from apr_mini.inference import open_backend

    checkpoint = "data/cpu-apr"
    chosen = load_problems(f"{checkpoint}/problems_val.jsonl", problems)

    def timed(backend, name):
        start = time.perf_counter()
        records = run_problems(backend, chosen)
        seconds = time.perf_counter() - start
        decoded = sum(r["metrics"]["decode_tokens"] for r in records)
        return {"what": f"engine, {name} ({len(chosen)} problems, cpu APR model)", "tokens/s": round(decoded / seconds),
                "accuracy": round(sum(r["verified"] for r in records) / len(records), 3)}

    rows = [timed(open_backend(checkpoint, device=device), f"in-process on {device}")]
    if device == "cuda" and importlib.util.find_spec("sglang"):
        from apr_mini.serving import launch_server

        with launch_server(checkpoint, kind="sglang", timeout=600, extra_args=["--attention-backend", "triton"]) as server:
            backend = server.backend()
            rows.append(timed(backend, "SGLang server"))
            backend.close()
        rows[-1]["ratio to in-process"] = round(rows[-1]["tokens/s"] / rows[0]["tokens/s"], 2)
    else:
        rows.append({"what": "engine, SGLang server", "tokens/s": "skipped: needs CUDA and sglang"})
    return rows


def main() -> None:
    from apr_mini.config import get_device

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["t4", "gpu"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--problems", type=int, default=64)
    args = parser.parse_args()
    device = get_device()
    rows = [sft_throughput(preset, args.steps, device) for preset in args.presets]
    rows += engine_throughput(args.problems, device)
    columns = ["what", "tokens/s", "peak memory (GB)", "accuracy", "ratio to in-process"]
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    for row in rows:
        print("| " + " | ".join("" if row.get(c) is None else f"{row[c]:,}" if isinstance(row.get(c), int) else str(row[c])
                                for c in columns) + " |")


if __name__ == "__main__":
    main()
