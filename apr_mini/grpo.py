"""GRPO over spawn trees: reinforcement learning of a parent and its children together, end to end.

Paper section 4.4 (and appendix A.2): after SFT, the APR model is trained for task success with
GRPO. A *tree* (one engine record: the root's calls, every child's calls, the joins) is one episode:

1. **Rollouts.** For each of ``problems_per_step`` training problems, ``num_generations`` trees are
   sampled at ``temperature`` through the spawn/join engine (the in-process continuous-batching
   backend, nested children included, a seed per thread and call derived from the step).
2. **Rewards** are plain functions of a record (:data:`REWARDS`): binary verified success by default.
3. **Advantages** are group-relative: a tree's reward minus its group's mean, divided by the group's
   std (``scale_rewards="group"``, APR) or not (``"none"``, ThreadWeaver). A group whose trees all
   got the same reward carries no signal and is skipped (and counted).
4. **Rows.** Every call of every thread is one training row: its prompt (the root or child prompt,
   or the joined text) is masked, its completion is trained, including the token that ended it (EOS,
   or the spawn's closing marker, which is part of the text). Every row of a tree trains with the
   tree's advantage.
5. **Loss** per completion token: TRL's clipped ratio ``-min(r A, clip(r, 1-epsilon, 1+epsilon_high) A)``
   plus ``beta`` times the k3 KL estimate to the frozen SFT model, the log-probabilities taken at the
   sampling ``temperature`` (logits divided by it, as TRL does), aggregated with the weights of
   :func:`token_weights` (APR's: each tree counts once however many threads it has). Rows are
   packed padding-free into blocks (:mod:`apr_mini.packing`, the same packed attention as SFT).

Deviation from TRL: ``GRPOTrainer`` trains one (prompt, completion) row per episode, and a tree is
several rows whose prompts depend on each other (a join rewrites the parent's context), so this is
apr-mini's own small loop, with TRL's config names (:class:`apr_mini.config.GRPOConfig`). For a SoS+
model (one row per tree) it computes TRL's loss exactly (``tests/test_grpo_trl.py``). As in TRL, a
completion trains on the ids the sampler drew (:mod:`apr_mini.rollouts` keeps them in the record;
only a server's text-only completions are re-tokenized), and a step's ``old_per_token_logps`` are
computed by the training forward pass itself when ``num_iterations=1``, so the ratio is 1 on the
first pass.

A whole run (checkpoints, resume, curve, evaluation, collapse stop, shipping) is
:mod:`apr_mini.grpo_train`; from the command line:
``python -m apr_mini grpo --checkpoint data/cpu-apr --kind apr --ship runs/cpu/apr-grpo``.
"""

from __future__ import annotations

import functools
import random
import time
from statistics import mean

import torch

from . import trace_language as tl
from .config import GRPOConfig
from .countdown import Problem
from .packing import block_logps, pack_rows
from .rollouts import Row, rollout, rollout_seed, token_agreement, tree_rows


# -- rewards: plain functions of an engine record ------------------------------------------------

def binary_reward(record: dict) -> float:
    """1 when the strict verifier accepts the tree's result, else 0 (APR's reward)."""
    return float(record["verified"])


def efficiency_reward(record: dict, weight: float = 0.5, cap: float = 0.2) -> float:
    """ThreadWeaver's correctness-gated efficiency term: a correct tree earns
    ``weight * min(1 - critical_path / total_tokens, cap)`` on top of 1; spawning useless threads
    can't earn it when the answer is wrong."""
    if not record["verified"]:
        return 0.0
    metrics = record["metrics"]
    acceleration = 1 - metrics["critical_path"] / max(1, metrics["total_tokens"])
    return 1.0 + weight * min(acceleration, cap)


def thread_penalty_reward(record: dict, per_thread: float = 0.01) -> float:
    """Binary success minus ``per_thread`` for every child thread (the penalty APR defined, unused)."""
    return float(record["verified"]) - per_thread * (record["metrics"]["n_threads"] - 1)


REWARDS = {"binary": binary_reward, "efficiency": efficiency_reward, "thread_penalty": thread_penalty_reward}


def reward_function(config: GRPOConfig):
    """The config's reward as a function of a record (``efficiency_cap`` applies to "efficiency")."""
    if config.reward == "efficiency":
        return functools.partial(efficiency_reward, cap=config.efficiency_cap)
    return REWARDS[config.reward]


def failure_counts(records: list[dict]) -> dict[str, int]:
    """How many threads of the trees failed, by kind (the failure's text up to its first colon or
    parenthesis: "malformed spawn", "context window full", ...)."""
    counts: dict[str, int] = {}
    for record in records:
        for failure in record["metrics"]["failures"]:
            kind = failure.split(":")[0].split(" (")[0].strip()
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def well_formed(record: dict) -> bool:
    """Every thread of the tree ended by itself (EOS or a parsed spawn), with no limit or format failure."""
    return not record["metrics"]["failures"]


# -- advantages ------------------------------------------------------------------------------

def group_advantages(rewards: list[float], num_generations: int, scale_rewards: str = "group") -> tuple[list[float], list[bool]]:
    """Each tree's advantage (reward minus its group's mean, divided by the std when
    ``scale_rewards`` is "group" or "batch"; TRL's formula: Bessel-corrected std + 1e-4), and for each
    group whether it carries signal (its rewards are not all equal). Groups are consecutive runs of
    ``num_generations`` rewards."""
    if len(rewards) % num_generations:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {num_generations}")
    r = torch.tensor(rewards, dtype=torch.float64).view(-1, num_generations)
    centred = r - r.mean(dim=1, keepdim=True)
    signal = (r.max(dim=1).values - r.min(dim=1).values > 1e-12).tolist()
    if scale_rewards == "group":
        centred = centred / (r.std(dim=1, keepdim=True).nan_to_num(0.0) + 1e-4)
    elif scale_rewards == "batch":
        centred = centred / (r.flatten().std().nan_to_num(0.0) + 1e-4)
    elif scale_rewards != "none":
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', not {scale_rewards!r}")
    return centred.flatten().tolist(), signal


# -- training rows -----------------------------------------------------------------------------

def batch_rows(records: list[dict], signal: list[bool], tokenizer, threads: str = "all",
               trees: list[list[Row]] | None = None) -> list[Row]:
    """The rows of every tree whose group carries signal, each with its tree's ``advantage``
    (records in groups of ``len(records) // len(signal)``); ``threads="root"`` keeps the root's rows only.
    ``trees``: each record's :func:`tree_rows`, where the caller has them already."""
    size = len(records) // len(signal)
    rows = []
    for index, record in enumerate(records):
        if signal[index // size]:
            for row in trees[index] if trees else tree_rows(record["tree"], tokenizer, index):
                if threads == "all" or row.thread == "root":
                    row.advantage = record["advantage"]
                    rows.append(row)
    return rows


def token_weights(rows: list[Row], loss_type: str = "grpo", sequence_weighting: str = "tree",
                  max_completion_length: int = 1024) -> list[float]:
    """The weight of each row's completion tokens in the loss (the loss is the weighted sum of the
    per-token losses):

    - ``grpo``: each row's token mean, rows weighted by ``sequence_weighting``: "tree" gives each
      tree the same total weight, shared by its rows (APR: token mean per sequence, divided by the
      sequences in its tree, summed, divided by the trees); "sequence" weighs every row alike;
    - ``dr_grpo``: like ``grpo`` but each row's token sum divided by ``max_completion_length``;
    - ``dapo``: one token mean over every completion token of the batch (ThreadWeaver's).

    With one row per tree (SoS+), "grpo" and "dr_grpo" are TRL's."""
    if loss_type == "dapo":
        total = sum(r.n_completion for r in rows)
        return [1.0 / max(1, total)] * len(rows)
    per_tree: dict[int, int] = {}
    for r in rows:
        per_tree[r.tree] = per_tree.get(r.tree, 0) + 1
    weights = []
    for r in rows:
        row_weight = 1 / (per_tree[r.tree] * len(per_tree)) if sequence_weighting == "tree" else 1 / len(rows)
        tokens = r.n_completion if loss_type == "grpo" else max_completion_length
        weights.append(row_weight / max(1, tokens))
    return weights


# -- the loss ----------------------------------------------------------------------------------

RARE_LOGP = -4.605  # log(0.01): a trained token the policy gave less than 1% is "rare"

def per_token_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, *, epsilon: float = 0.2,
                   epsilon_high: float | None = None, beta: float = 0.0, ref_logps: torch.Tensor | None = None,
                   use_bias_correction_kl: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's clipped surrogate per token, plus ``beta`` times the k3 KL estimate
    ``exp(ref - logp) - (ref - logp) - 1`` when ``beta > 0`` (times the ratio with
    ``use_bias_correction_kl``, TRL 1.16's default; APR's plain k3 without). Returns (loss, kl) per token."""
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + (epsilon if epsilon_high is None else epsilon_high))
    loss = -torch.min(ratio * advantages, clipped * advantages)
    kl = torch.zeros_like(logps)
    if beta:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        loss = loss + beta * (kl * ratio if use_bias_correction_kl else kl)
    return loss, kl


def reference_logps(model, rows: list[Row], blocks: list[list[int]], config: GRPOConfig, ref_model=None) -> dict:
    """Per row: the old log-probs (``num_iterations > 1``) and the reference model's (``beta > 0``),
    taken once, without grad, before a step's optimizer steps; ``None`` where not needed."""
    fixed = {}
    if config.num_iterations > 1 or config.beta:
        with torch.no_grad():
            for block in blocks:
                chosen = [rows[i] for i in block]
                old = block_logps(model, chosen, config.temperature)[0] if config.num_iterations > 1 else [None] * len(block)
                ref = block_logps(ref_model.train(), chosen, config.temperature)[0] if config.beta else [None] * len(block)
                fixed.update({i: pair for i, pair in zip(block, zip(old, ref))})
    return fixed


def masked(row: Row, config: GRPOConfig) -> bool:
    """Whether a row gives no gradient: a call cut by the context or a limit, under ``mask_truncated_completions``."""
    return config.mask_truncated_completions and row.truncated


def backward_loss(model, rows: list[Row], weights: list[float], blocks: list[list[int]], fixed: dict,
                  config: GRPOConfig) -> dict:
    """One pass over the packed blocks: the weighted loss of every completion token, backpropagated
    block by block (gradients add up). Returns the loss and, per trained token, the KL, entropy and
    clipped share; the lowest log-probability of a trained token and the share below ``log(0.01)``
    (rare tokens carry most of a peaked policy's gradient); and the largest gap between the trained
    log-probability and the sampler's (``sampler_gap``, the rollout's numerics against training's)."""
    device = next(model.parameters()).device
    high = 1 + (config.epsilon if config.epsilon_high is None else config.epsilon_high)
    total = kl_sum = entropy_sum = clipped = tokens = rare = gap = 0.0
    lowest = 0.0
    for block in blocks:
        logps, entropies = block_logps(model, [rows[i] for i in block], config.temperature)
        block_loss = torch.zeros((), device=device)
        for i, lp, entropy in zip(block, logps, entropies):
            if masked(rows[i], config):
                continue
            old, ref = fixed.get(i, (None, None))
            old = lp.detach() if old is None else old
            loss, kl = per_token_loss(lp, old, torch.full_like(lp, rows[i].advantage), epsilon=config.epsilon,
                                      epsilon_high=config.epsilon_high, beta=config.beta, ref_logps=ref,
                                      use_bias_correction_kl=config.use_bias_correction_kl)
            block_loss = block_loss + weights[i] * loss.sum()
            with torch.no_grad():
                ratio = torch.exp(lp - old)
                clipped += float(((ratio < 1 - config.epsilon) | (ratio > high)).sum())
                kl_sum += float(kl.sum())
                entropy_sum += float(entropy.sum())
                tokens += lp.numel()
                if lp.numel():
                    lowest = min(lowest, float(lp.min()))
                    rare += float((lp < RARE_LOGP).sum())
                if rows[i].sampled_logps is not None:
                    sampled = torch.tensor(rows[i].sampled_logps, device=device)
                    gap = max(gap, float((lp - sampled).abs().max()))
        if block_loss.requires_grad:
            block_loss.backward()
        total += block_loss.item()
    n = max(1.0, tokens)
    return {"loss": total, "kl": kl_sum / n, "entropy": entropy_sum / n, "clipped": clipped / n,
            "min_logp": lowest, "rare_tokens": rare / n, "sampler_gap": gap}


def optimize(model, optimizer, rows: list[Row], config: GRPOConfig, *, ref_model=None,
             max_completion_length: int = 1024) -> dict:
    """``config.num_iterations`` optimizer steps on a batch of rows (advantages already set).
    Returns the last pass's loss, KL, entropy, clipped share and grad norm. The model trains in
    packed blocks of at most ``config.block_tokens`` tokens (a longer row gets its own block)."""
    if not rows:
        return dict.fromkeys(("loss", "kl", "entropy", "clipped", "min_logp", "rare_tokens", "sampler_gap",
                              "grad_norm"))
    model.train()  # the packed attention applies in training mode; the small Llamas have no dropout
    weights = token_weights(rows, config.loss_type, config.sequence_weighting, max_completion_length)
    blocks = pack_rows([len(r.ids) for r in rows], config.block_tokens)
    fixed = reference_logps(model, rows, blocks, config, ref_model)
    for _ in range(config.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        stats = backward_loss(model, rows, weights, blocks, fixed, config)
        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm))
        optimizer.step()
    return stats


def step_problems(train_problems: list[Problem], config: GRPOConfig, step: int) -> list[Problem]:
    """The step's problems, drawn from a stream seeded by (seed, step): a resumed run draws the same."""
    rng = random.Random(f"grpo:{config.seed}:{step}")
    return rng.sample(train_problems, min(config.problems_per_step, len(train_problems)))


def step_budgets(problems: list[Problem], config: GRPOConfig, step: int) -> list[int | None]:
    """Each problem's ``Sub Call Budget`` this step (None for all without ``config.sub_call_budgets``),
    drawn from a stream seeded by (seed, step): a resumed run draws the same."""
    if not config.sub_call_budgets:
        return [None] * len(problems)
    rng = random.Random(f"grpo-budget:{config.seed}:{step}")
    return [rng.choice(config.sub_call_budgets) for _ in problems]


def step_rollouts(model, tokenizer, problems: list[Problem], config: GRPOConfig, *, kind: str, step: int,
                  rollouts=None) -> list[dict]:
    """The step's trees: ``num_generations`` per problem, sampled with the step's seed, each record
    with the ``sub_call_budget`` its problem was conditioned on (None: none)."""
    budgets = step_budgets(problems, config, step)
    records = rollout(model, tokenizer, problems, num_generations=config.num_generations, kind=kind,
                      temperature=config.temperature, seed=rollout_seed(config.seed, step), max_batch=config.max_batch,
                      rollouts=rollouts, prefixes=["" if b is None else tl.condition_prefix("sub_calls", b) for b in budgets])
    for record in records:
        record["sub_call_budget"] = budgets[record["id"] // config.num_generations]
    return records


def shuffled_within_groups(rewards: list[float], num_generations: int, rng: random.Random) -> list[float]:
    """Each group's rewards dealt to its trees in a random order: the same signal, in size and in how
    many groups carry one, with its direction taken away (``GRPOConfig.shuffle_rewards``, a placebo)."""
    dealt = []
    for start in range(0, len(rewards), num_generations):
        group = rewards[start:start + num_generations]
        dealt += rng.sample(group, len(group))
    return dealt


def score_rollouts(records: list[dict], tokenizer, config: GRPOConfig, step: int = 0):
    """Rewards and advantages of a step's records (set on each as ``reward`` and ``advantage``).
    Returns the rewards, each group's signal, every tree's rows (trained or not) and the rows that train."""
    reward = reward_function(config)
    rewards = [reward(r) for r in records]
    if config.shuffle_rewards:  # seeded by (seed, step): a resumed run deals the same
        rewards = shuffled_within_groups(rewards, config.num_generations, random.Random(f"grpo-placebo:{config.seed}:{step}"))
    advantages, signal = group_advantages(rewards, config.num_generations, config.scale_rewards)
    for record, reward, advantage in zip(records, rewards, advantages):
        record["reward"], record["advantage"] = reward, advantage
    trees = [tree_rows(record["tree"], tokenizer, index) for index, record in enumerate(records)]
    return rewards, signal, trees, batch_rows(records, signal, tokenizer, config.trained_threads, trees)


def grpo_step(model, tokenizer, optimizer, problems: list[Problem], config: GRPOConfig, *, kind: str, step: int,
              ref_model=None, rollouts=None) -> tuple[dict, list[dict]]:
    """One GRPO step: rollouts, rewards, advantages, rows, optimizer step(s). Returns the step's
    curve point and the rollout records (each with its ``reward`` and ``advantage``)."""
    start = time.perf_counter()
    records = step_rollouts(model, tokenizer, problems, config, kind=kind, step=step, rollouts=rollouts)
    rollout_s = time.perf_counter() - start
    rewards, signal, trees, rows = score_rollouts(records, tokenizer, config, step)
    start = time.perf_counter()
    context = int(model.config.max_position_embeddings)
    stats = optimize(model, optimizer, rows, config, ref_model=ref_model,
                     max_completion_length=config.max_completion_length or context)
    metrics = [r["metrics"] for r in records]
    agreement = token_agreement(records, tokenizer, trees=trees)
    point = {
        "step": step, "reward": mean(rewards), "accuracy": mean(float(r["verified"]) for r in records),
        "children": mean(m["n_threads"] - 1 for m in metrics), "total_tokens": mean(m["total_tokens"] for m in metrics),
        "longest_sequence": mean(m["longest_sequence"] for m in metrics),
        "critical_path": mean(m["critical_path"] for m in metrics),
        "well_formed": mean(float(well_formed(r)) for r in records),
        "skipped_groups": signal.count(False), "groups": len(signal), "rows": len(rows),
        "trained_tokens": sum(r.n_completion for r in rows if not masked(r, config)),
        "advantage_abs": mean([abs(r["advantage"]) for i, r in enumerate(records)
                               if signal[i // config.num_generations]] or [0.0]),
        "failures": failure_counts(records), "retokenized_differs": agreement["calls_that_differ"],
        "special_tokens_sampled": sum(agreement["special_tokens_sampled"].values()), **stats,
        "rollout_s": round(rollout_s, 2), "train_s": round(time.perf_counter() - start, 2),
    }
    return point, records
