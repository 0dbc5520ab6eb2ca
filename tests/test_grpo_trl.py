"""apr-mini's GRPO loss against TRL's ``GRPOTrainer``, the peer for a SoS+ model (one sequence per
episode): the same completions, rewards and settings give the same loss and the same gradients."""

from pathlib import Path

import pytest
import torch

from apr_mini import grpo
from apr_mini import trace_language as tl
from apr_mini.config import GRPOConfig
from apr_mini.data import load_problems

ROOT = Path(__file__).parent.parent
TINY_SOSP = ROOT / "data" / "tiny-sosp"
GROUP = 4


def _model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(TINY_SOSP))


@pytest.fixture(scope="module")
def episodes():
    """2 problems x 4 sampled SoS+ traces of the tiny model, with rewards that vary in each group."""
    from apr_mini.generation import generate
    from apr_mini.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(TINY_SOSP)
    problems = load_problems(TINY_SOSP / "problems_val.jsonl", 2)
    prompts = [tl.root_prompt(p.target, p.nums) for p in problems for _ in range(GROUP)]
    samples = generate(_model(), tokenizer, prompts, temperature=1.0, max_new_tokens=60, seed=1)
    rewards = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5]
    return tokenizer, samples, rewards


def _trl_inputs(tokenizer, samples, advantages, ref_logps):
    """The batch ``GRPOTrainer._compute_loss`` takes: left-padded prompts, right-padded completions
    ending in EOS where the sample finished."""
    prompts = [tokenizer(s.prompt)["input_ids"] for s in samples]
    completions = [tokenizer(s.completion, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id]
                   if s.finished else []) for s in samples]
    p_len, c_len = max(map(len, prompts)), max(map(len, completions))
    pad = tokenizer.pad_token_id
    prompt_ids = torch.tensor([[pad] * (p_len - len(p)) + p for p in prompts])
    prompt_mask = torch.tensor([[0] * (p_len - len(p)) + [1] * len(p) for p in prompts])
    completion_ids = torch.tensor([c + [pad] * (c_len - len(c)) for c in completions])
    completion_mask = torch.tensor([[1] * len(c) + [0] * (c_len - len(c)) for c in completions])
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
              "completion_mask": completion_mask, "advantages": torch.tensor(advantages, dtype=torch.float32)}
    if ref_logps is not None:
        inputs["ref_per_token_logps"] = torch.stack([torch.cat([r, r.new_zeros(c_len - len(r))]) for r in ref_logps])
    return inputs, prompts, completions


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
# a temperature below 1: both sides take the policy's and the reference's log-probs of logits / temperature
@pytest.mark.parametrize("beta, bias_correction, temperature",
                         [(0.0, False, 1.0), (0.04, False, 1.0), (0.04, True, 1.0), (0.04, False, 0.7)])
def test_loss_and_gradients_equal_trl(episodes, loss_type, beta, bias_correction, temperature, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    from apr_mini.packing import pack_rows, use_packed_attention

    tokenizer, samples, rewards = episodes
    advantages, signal = grpo.group_advantages(rewards, GROUP, "group")
    assert all(signal)
    max_completion_length = 64
    config = GRPOConfig(loss_type=loss_type, beta=beta, epsilon=0.2, max_completion_length=max_completion_length,
                        num_generations=GROUP, use_bias_correction_kl=bias_correction, temperature=temperature)

    # reference log-probs from a perturbed copy, so the KL term is not zero
    torch.manual_seed(0)
    reference = _model()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.01 * torch.randn_like(p))
    use_packed_attention(reference)

    ours = _model()
    use_packed_attention(ours)
    rows = []
    for i, (sample, advantage) in enumerate(zip(samples, advantages)):
        prompt = tokenizer(sample.prompt)["input_ids"]
        completion = tokenizer(sample.completion, add_special_tokens=False)["input_ids"]
        completion += [tokenizer.eos_token_id] if sample.finished else []
        rows.append(grpo.Row(i, "root", prompt + completion, len(prompt), advantage))
    blocks = pack_rows([len(r.ids) for r in rows], 4096)
    ours.train()
    fixed = grpo.reference_logps(ours, rows, blocks, config, reference)
    weights = grpo.token_weights(rows, loss_type, "tree", max_completion_length)
    our_loss = grpo.backward_loss(ours, rows, weights, blocks, fixed, config)["loss"]

    args = TRLConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, num_generations=GROUP,
                     per_device_train_batch_size=GROUP, gradient_accumulation_steps=1, beta=beta, epsilon=0.2,
                     loss_type=loss_type, max_completion_length=max_completion_length, report_to="none",
                     scale_rewards="group", temperature=temperature, use_bias_correction_kl=bias_correction,
                     activation_checkpointing=False)
    theirs = _model()
    trainer = GRPOTrainer(model=theirs, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
                          train_dataset=Dataset.from_list([{"prompt": "x"}] * GROUP), processing_class=tokenizer)
    trainer.current_gradient_accumulation_steps = 1
    ref_logps = [fixed[i][1] for i in range(len(rows))] if beta else None
    inputs, _, _ = _trl_inputs(tokenizer, samples, advantages, ref_logps)
    theirs.train()
    trl_loss = trainer._compute_loss(theirs, inputs)
    trl_loss.backward()

    assert our_loss == pytest.approx(trl_loss.item(), rel=1e-4, abs=1e-7)
    named = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, named[name].grad, rtol=1e-3, atol=1e-6)
