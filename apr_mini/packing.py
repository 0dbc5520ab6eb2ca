"""Padding-free packed training batches, shared by SFT (:mod:`apr_mini.sft`) and GRPO
(:mod:`apr_mini.grpo`).

Several rows (token sequences) are laid end to end in one block, with position ids that restart at
0 at each row, so no compute is spent on padding. Inside a block, attention runs row by row
(:func:`use_packed_attention`), so no token attends across rows. TRL's ``SFTTrainer`` builds such
blocks itself (``packing_strategy="bfd"``); GRPO builds them with :func:`pack_rows` and reads each
row's log-probabilities from one packed pass with :func:`block_logps`.
"""

from __future__ import annotations


def _packed_attention(module, query, key, value, attention_mask, *, position_ids=None, **kwargs):
    """Training attention for a packed block: causal SDPA row by row (a row starts where the position
    ids restart at 0) instead of one SDPA over the whole block under a block-diagonal mask, which
    computes every pair of positions in the block (a block of six 170-token APR rows: 6x the
    attention arithmetic). Everything else (generation, padded batches) is plain SDPA."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    packed = (module.training and query.shape[0] == 1 and position_ids is not None
              and query.shape[2] == key.shape[2] == position_ids.shape[-1] and int(position_ids[0, 0]) == 0)
    if not packed:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    starts = (position_ids[0] == 0).nonzero().flatten().tolist() + [query.shape[2]]
    rows = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, is_causal=True,
                                   **kwargs)[0] for a, b in zip(starts, starts[1:])]
    return torch.cat(rows, dim=1), None


def use_packed_attention(model) -> None:
    """Give an SDPA model :func:`_packed_attention` for packed training (not saved with the model).
    It applies while the model is in training mode (``model.train()``)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if model.config._attn_implementation == "sdpa":
        AttentionInterface.register("apr_mini_packed", _packed_attention)
        AttentionMaskInterface.register("apr_mini_packed", sdpa_mask)
        model.config._attn_implementation = "apr_mini_packed"


def pack_rows(lengths: list[int], block_tokens: int) -> list[list[int]]:
    """Row indices grouped into blocks of at most ``block_tokens`` tokens, first-fit decreasing (a row
    longer than a block gets a block of its own)."""
    blocks: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((b for b, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            blocks.append([i])
            room.append(block_tokens - lengths[i])
        else:
            blocks[slot].append(i)
            room[slot] -= lengths[i]
    return blocks


def block_logps(model, rows: list, temperature: float = 1.0) -> tuple[list, list]:
    """One packed forward pass over ``rows`` (each with ``ids`` and ``n_prompt``, the prompt's length):
    each row's completion tokens' log-probabilities (with grad if enabled) and entropies (detached),
    under the model's distribution at ``temperature`` (logits divided by it, as TRL's GRPO does: the
    policy trained is the one the rollouts sampled from)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([t for r in rows for t in r.ids], device=device)
    positions = torch.cat([torch.arange(len(r.ids), device=device) for r in rows])
    logits = model(input_ids=ids[None], position_ids=positions[None], use_cache=False).logits[0].float()
    if temperature != 1.0:
        logits = logits / temperature
    logp_all = logits[:-1].log_softmax(-1)  # position j predicts token j + 1
    next_logps = logp_all.gather(-1, ids[1:, None]).squeeze(-1)
    logps, entropies, start = [], [], 0
    for r in rows:
        a, b = start + r.n_prompt - 1, start + len(r.ids) - 1
        logps.append(next_logps[a:b])
        with torch.no_grad():
            p = logp_all[a:b].exp()
            entropies.append(-(p * logp_all[a:b]).sum(-1))
        start += len(r.ids)
    return logps, entropies
