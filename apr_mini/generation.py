"""Batched sampling from a trace model with plain ``transformers.generate``.

Prompts are grouped by length (less padding), left-padded, and each row stops on its own at EOS or
at the model's context window. This is the single-sequence building block; the spawn/join engine
(notebook 04) schedules many of these calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Sample:
    prompt: str
    completion: str
    finished: bool      # ended with EOS (False: cut by the token or context limit)
    new_tokens: int


def context_window(model) -> int:
    return int(model.config.max_position_embeddings)


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int | None = None, temperature: float = 0.0,
             batch_size: int = 64, seed: int = 0, progress: bool = False) -> list[Sample]:
    """Continue every prompt (BOS is added) until EOS or the context window; greedy when
    ``temperature == 0``. Results come back in the order of ``prompts``."""
    if not prompts:
        return []
    device = next(model.parameters()).device
    window = context_window(model)
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    results: list[Sample | None] = [None] * len(prompts)
    generator_seed = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="generating"):
        chunk = order[start:start + batch_size]
        longest = max(len(encoded[i]) for i in chunk)
        room = window - longest
        budget = room if max_new_tokens is None else min(max_new_tokens, room)
        if budget <= 0:
            for i in chunk:
                results[i] = Sample(prompts[i], "", False, 0)
            continue
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in chunk]}, padding=True, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        if temperature > 0:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
        out = model.generate(**batch, max_new_tokens=budget, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, **sampling)
        new = out[:, batch["input_ids"].shape[1]:].tolist()
        for i, ids in zip(chunk, new):
            finished = tokenizer.eos_token_id in ids
            if finished:
                ids = ids[:ids.index(tokenizer.eos_token_id)]
            else:
                ids = [t for t in ids if t != tokenizer.pad_token_id]
            results[i] = Sample(prompts[i], tokenizer.decode(ids, skip_special_tokens=True), finished, len(ids))
    if was_training:
        model.train()
    return results
