"""Configuration: the Countdown task, the demonstration solver's knobs, and named profiles.

A *profile* is a named preset that scales the whole pipeline:

- ``tiny``: seconds, for tests and CI (2-core CPU, no GPU);
- ``cpu``: minutes to an hour or two, for a laptop;
- ``gpu``: the paper's scale (4 numbers in 1..99, targets 10..100, beam sizes as the reference).

Notebooks and scripts pick one with the ``APR_PROFILE`` environment variable (default ``cpu``);
``make test`` sets ``APR_PROFILE=tiny``. The ``cpu`` task (3 numbers in 1..12, targets 10..36, the
``cpu`` model's 768-token context) is what the SFT sweep found a 2-core CPU can learn
(``experiments/sft_sweep.py``) with SoS+ traces long enough to overflow the context, as in the paper.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

PROFILE_ENV_VAR = "APR_PROFILE"
DEFAULT_PROFILE = "cpu"


class UserFacingError(Exception):
    """An error whose message says what to do; the command line prints it without a traceback."""


@dataclass(frozen=True)
class TaskConfig:
    """Which Countdown problems to draw (paper: 4 numbers in 1..99, targets 10..100)."""

    n_numbers: int = 4
    min_number: int = 1
    max_number: int = 99
    min_target: int = 10
    max_target: int = 100

    def __post_init__(self):
        if not 2 <= self.n_numbers <= 6:
            raise ValueError(f"n_numbers must be in 2..6, got {self.n_numbers}")
        if not 0 <= self.min_number <= self.max_number:
            raise ValueError(f"need 0 <= min_number <= max_number, got {self.min_number}..{self.max_number}")
        if not 1 <= self.min_target <= self.max_target:
            raise ValueError(f"need 1 <= min_target <= max_target, got {self.min_target}..{self.max_target}")


@dataclass(frozen=True)
class DemoConfig:
    """Knobs of the symbolic solver that writes demonstrations (reference: generate_apr/sosp.py).

    Beam sizes are drawn per problem, uniformly, which mixes breadth-first (wide beam) and
    depth-first (narrow beam, dives) search styles as the paper does.
    """

    heuristic: str = "mult"  # "mult" (distance to the target's factors) or "sum"
    # SoS+: beam drawn from sosp_min_beam..sosp_max_beam; each expanded node dives depth-first with this probability
    sosp_min_beam: int = 1
    sosp_max_beam: int = 5
    sosp_dive_probability: float = 0.5
    # APR: root beam from apr_min_beam..apr_max_beam; children's beam from beam..apr_max_sub_beam
    apr_min_beam: int = 1
    apr_max_beam: int = 10
    apr_max_sub_beam: int = 15
    spawn_probability: float = 0.9
    max_spawn_depth: int = 1  # reference: 1 (children never spawn); 2+ gives nested spawns
    # Optional conditioning prefix on APR demonstrations: None, "sub_calls" or "tokens"
    condition: str | None = None
    # Write "Token Budget: N" (the trace's own tokens, rounded up) on SoS+ demonstrations (paper section 5.2)
    sosp_token_budget: bool = False
    token_budget_step: int = 512  # token budgets are rounded up to a multiple of this


@dataclass(frozen=True)
class DataConfig:
    """How much data to write. Problems are unique by (sorted numbers, target) within and across
    splits (train, validation and, where ``n_test`` > 0, test); each training problem gets
    ``traces_per_problem`` demonstrations (fresh beams, and after the first one the numbers in a
    shuffled order)."""

    n_train: int = 1000
    n_val: int = 200
    n_test: int = 0  # a test split that no choice of settings sees (reported figures only)
    traces_per_problem: int = 1
    seed: int = 0


@dataclass(frozen=True)
class Profile:
    name: str
    task: TaskConfig = field(default_factory=TaskConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def replace(self, **changes) -> "Profile":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        task=TaskConfig(n_numbers=3, min_number=1, max_number=12, min_target=10, max_target=36),
        demo=DemoConfig(sosp_max_beam=3, apr_max_beam=4, apr_max_sub_beam=6, token_budget_step=128),
        data=DataConfig(n_train=200, n_val=50),
    ),
    "cpu": Profile(
        name="cpu",
        task=TaskConfig(n_numbers=3, min_number=1, max_number=12, min_target=10, max_target=36),
        # Wider beams than the reference's 1..5 / 1..6: the solver solves 80% (SoS+) and 77% (APR) of
        # this task instead of 63% and 67%, and a model can only imitate what the solver shows it.
        # Token budgets step by 128: this task's traces are 200-1,300 tokens (the paper's step, 512, suits 4k)
        demo=DemoConfig(sosp_min_beam=3, sosp_max_beam=8, apr_min_beam=3, apr_max_beam=6, apr_max_sub_beam=10,
                        token_budget_step=128),
        # This task has only 1,934 distinct solvable problems: use most of them, many traces each.
        data=DataConfig(n_train=1500, n_val=200, traces_per_problem=16),
    ),
    # One free cloud GPU (APR_PROFILE=t4): 4 numbers instead of 3, so the searches are long enough that
    # SoS+ runs out of a 1,536-token context while APR's threads fit (benchmarks/gpu_check.sh; docs/engine.md)
    "t4": Profile(
        name="t4",
        task=TaskConfig(n_numbers=4, min_number=1, max_number=12, min_target=10, max_target=36),
        demo=DemoConfig(sosp_min_beam=3, sosp_max_beam=8, apr_min_beam=3, apr_max_beam=6, apr_max_sub_beam=10,
                        token_budget_step=256),
        data=DataConfig(n_train=20_000, n_val=500, traces_per_problem=4),
    ),
    # The deep task on a laptop: the t4 task (4 numbers in 1..12, targets 10..36; about 20 first moves
    # and 705 complete expressions a problem, against 10 and 35 at 3 numbers), where a child is a
    # 3-number search and SoS+ traces overflow a 1,536-token window 61% of the time. Its own test
    # split (500 problems) is what the deep claims and GRPO gains are reported on.
    "cpu4": Profile(
        name="cpu4",
        task=TaskConfig(n_numbers=4, min_number=1, max_number=12, min_target=10, max_target=36),
        demo=DemoConfig(sosp_min_beam=3, sosp_max_beam=8, apr_min_beam=3, apr_max_beam=6, apr_max_sub_beam=10,
                        token_budget_step=256),
        data=DataConfig(n_train=2000, n_val=200, n_test=500, traces_per_problem=4),
    ),
    "gpu": Profile(
        name="gpu",
        task=TaskConfig(n_numbers=4, min_number=1, max_number=99, min_target=10, max_target=100),
        demo=DemoConfig(sosp_max_beam=5, apr_max_beam=10, apr_max_sub_beam=15),
        data=DataConfig(n_train=500_000, n_val=1000),
    ),
}


@dataclass(frozen=True)
class GRPOConfig:
    """GRPO over spawn trees (:mod:`apr_mini.grpo`). Names follow TRL's ``GRPOConfig`` where TRL has
    the knob; ``problems_per_step``, ``sequence_weighting``, ``reward`` and the rest are apr-mini's.
    The defaults are APR's own RL settings (paper appendix A.2): 64 problems x 5 trees a step,
    lr 1e-5, clip 0.2, beta 0.001, 150 steps."""

    learning_rate: float = 1e-5
    max_steps: int = 150
    problems_per_step: int = 64        # TRL: generation_batch_size / num_generations
    num_generations: int = 5           # trees per problem (the group)
    temperature: float = 1.0
    beta: float = 0.001                # KL to the frozen SFT model (k3 estimator); 0 skips the reference model
    use_bias_correction_kl: bool = False  # TRL 1.16's default is True (k3 times the ratio); APR's is plain k3
    epsilon: float = 0.2
    epsilon_high: float | None = None  # None: epsilon (symmetric clip)
    loss_type: str = "grpo"            # "grpo", "dr_grpo" or "dapo" (TRL's meanings; see grpo.token_weights)
    scale_rewards: str = "group"       # "group": divide by the group's std (APR); "batch"; "none" (ThreadWeaver)
    sequence_weighting: str = "tree"   # "tree": each tree counts once, however many threads (APR); "sequence"
    trained_threads: str = "all"       # "all" (APR: parent and children) or "root" (children's calls give no gradient)
    num_iterations: int = 1            # optimizer steps on each batch of rollouts (APR: 2)
    max_completion_length: int | None = None  # dr_grpo's normaliser (None: the model's context)
    mask_truncated_completions: bool = False  # don't train calls cut by the context or a limit
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    reward: str = "binary"             # a key of grpo.REWARDS
    efficiency_cap: float = 0.2        # the "efficiency" reward's cap on 1 - critical path / total tokens (ThreadWeaver)
    shuffle_rewards: bool = False      # a placebo: each group's rewards dealt to its trees at random (signal without direction)
    # RL of a sub-call budget model: each problem's trees are conditioned on "Sub Call Budget: N", N
    # drawn per problem from these (empty: no condition), so accuracy at a fixed number of children
    # can be compared before and after RL (the paper's appendix: 10 children enforced)
    sub_call_budgets: tuple[int, ...] = ()
    eval_steps: int = 10               # steps between greedy evaluations on held-out problems (0: never)
    eval_problems: int = 100
    save_steps: int = 1                # steps between checkpoints (1: a kill loses at most one step)
    seed: int = 0
    # stop (collapse) when the share of cleanly ended trees over the last 5 steps falls below this fraction
    # of the first 5 steps': relative, so a model that starts at 19% clean (SoS+ at 4 numbers) meets its own start
    min_well_formed: float = 0.5
    block_tokens: int = 4096           # tokens per packed training block
    max_batch: int = 64                # rows the rollout engine decodes together

    def __post_init__(self):
        choices = {"loss_type": ("grpo", "dr_grpo", "dapo"), "scale_rewards": ("group", "batch", "none"),
                   "sequence_weighting": ("tree", "sequence"), "trained_threads": ("all", "root")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        for name in ("max_steps", "problems_per_step", "num_generations", "num_iterations", "save_steps",
                     "block_tokens", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.temperature <= 0:
            raise ValueError("learning_rate and temperature must be > 0 (GRPO samples its rollouts)")
        if self.reward not in ("binary", "efficiency", "thread_penalty"):
            raise ValueError(f"reward must be 'binary', 'efficiency' or 'thread_penalty', not {self.reward!r}")
        if not 0 <= self.min_well_formed <= 1:
            raise ValueError(f"min_well_formed is a share in 0..1, got {self.min_well_formed}")
        object.__setattr__(self, "sub_call_budgets", tuple(self.sub_call_budgets))  # a resumed run's JSON gives a list
        if any(b < 1 for b in self.sub_call_budgets):
            raise ValueError(f"sub_call_budgets must be child counts of at least 1, got {self.sub_call_budgets}")


GRPO_PRESETS: dict[str, GRPOConfig] = {
    # seconds: 2 problems x 4 trees, 3 steps (tests, notebook 05's live run)
    # (its model's trees often run out of room, so no collapse check)
    "tiny": GRPOConfig(learning_rate=1e-4, max_steps=3, problems_per_step=2, num_generations=4, eval_steps=3,
                       eval_problems=8, block_tokens=2048, min_well_formed=0.0),
    # 128 trees a step, about 40 min on one CPU thread; a larger lr than APR's 1e-5 for a model 200x smaller, group of 8
    # (an all-same group, no signal, is 5x rarer at 60% success than with 5)
    "cpu": GRPOConfig(learning_rate=1e-4, max_steps=60, problems_per_step=16, num_generations=8, eval_steps=10,
                      eval_problems=100),
    # the deep task, sized to one session: a deep APR step of 8 trees is 29 s at 1 thread, 18 s at 2
    # (bench_grpo --deep; docs/results.md), so 8 problems x 4 trees is about 2 min a step at 1 thread and
    # 30 steps an hour; a greedy evaluation of 100 validation problems about 5 min through the engine.
    # beta 0.04 and dr_grpo: what held the cpu APR runs
    "cpu4": GRPOConfig(learning_rate=1e-4, max_steps=30, problems_per_step=8, num_generations=4, beta=0.04,
                       loss_type="dr_grpo", eval_steps=15, eval_problems=100, block_tokens=8192),
    # one T4: 16 problems x 8 trees a step, beta 0.04 (what held the cpu APR run), 30 steps (estimated at about
    # 15 minutes; docs/engine.md, "On GPUs")
    "t4": GRPOConfig(learning_rate=5e-5, max_steps=30, problems_per_step=16, num_generations=8, beta=0.04,
                     eval_steps=10, eval_problems=200, block_tokens=8192),
    "gpu": GRPOConfig(),
}


# what a method's runs change in a profile's preset, chosen on validation problems: cpu APR with the grpo
# loss collapsed seed 1 even at beta 0.04; dr_grpo held all three seeds (data/grpo/README.md)
GRPO_METHOD_CHANGES: dict[tuple[str, str], dict] = {("cpu", "apr"): {"beta": 0.04, "loss_type": "dr_grpo"}}


def get_grpo_config(name: str | None = None, kind: str | None = None, **changes) -> GRPOConfig:
    """The GRPO preset of profile ``name`` (default ``$APR_PROFILE`` or cpu) for method ``kind`` ("apr"
    or "sosp"; None: the preset itself), with ``changes``."""
    profile = get_profile(name).name
    method = GRPO_METHOD_CHANGES.get((profile, kind), {}) if kind else {}
    return dataclasses.replace(GRPO_PRESETS[profile], **{**method, **{k: v for k, v in changes.items() if v is not None}})


# the model roles of a reproduction, each a ReproduceConfig field of checkpoints (one per training seed)
ROLES = ("sosp_sft", "apr_sft", "sosp_grpo", "apr_grpo", "sosp_budget", "apr_budget", "apr_budget_grpo", "sosp_room")


@dataclass(frozen=True)
class ReproduceConfig:
    """What ``python -m apr_mini reproduce`` evaluates (:mod:`apr_mini.results`). Each model role is
    a tuple of checkpoints, one per training seed; a checkpoint that is not there is left out and
    reported as missing, so the figures show what exists and say what does not."""

    problems: str = "data/countdown-cpu/problems_val.jsonl"
    n_problems: int = 200
    sosp_sft: tuple[str, ...] = ("data/cpu-sosp", "data/seeds/cpu-sosp-seed1", "data/seeds/cpu-sosp-seed2")
    apr_sft: tuple[str, ...] = ("data/cpu-apr", "data/seeds/cpu-apr-seed1", "data/seeds/cpu-apr-seed2")
    # each SFT seed after GRPO (a run that collapsed leaves collapsed.json instead of a model); APR's with
    # the dr_grpo loss, which held all three seeds where the grpo loss collapsed seed 1
    sosp_grpo: tuple[str, ...] = ("data/cpu-sosp-grpo", "data/seeds/cpu-sosp-grpo-seed1",
                                  "data/seeds/cpu-sosp-grpo-seed2")
    apr_grpo: tuple[str, ...] = tuple(f"data/seeds/cpu-apr-grpo-seed{seed}-drgrpo" for seed in range(3))
    # each SFT seed continued on "Token Budget: N" traces / "Sub Call Budget: N" trees
    sosp_budget: tuple[str, ...] = ("data/cpu-sosp-budget", "data/seeds/cpu-sosp-budget-seed1",
                                    "data/seeds/cpu-sosp-budget-seed2")
    apr_budget: tuple[str, ...] = ("data/cpu-apr-budget", "data/seeds/cpu-apr-budget-seed1",
                                   "data/seeds/cpu-apr-budget-seed2")
    # each APR budget model after GRPO on its own drawn "Sub Call Budget: N": RL at a fixed number of children
    apr_budget_grpo: tuple[str, ...] = ("data/cpu-apr-budget-grpo",)
    # SoS+ trained with a window that fits most of its searches (evaluated at room_window, its own):
    # the sequential baseline of the latency claim, which a SoS+ model cut by its window is not
    sosp_room: tuple[str, ...] = ()
    room_window: int = 0
    task: str = "3 numbers"            # what the depth figure calls this task
    contrast: str = ""                 # the other task's summary.json: the depth figure sets the two side by side
    windows: tuple[int, ...] = (384, 512, 640, 768)    # context windows; the largest is the models' own
    derivation_window: int = 512       # one real SoS+ run here checks the windows derived from the largest
    token_budgets: tuple[int, ...] = (384, 512, 640, 768)
    sub_call_budgets: tuple[int, ...] = (3, 4, 5, 6)   # what the demonstrations spawn (3..6 children)
    ks: tuple[int, ...] = (1, 2, 4, 8)  # samples per problem for pass@k and majority@k
    sample_seeds: int = 3              # SFT seeds whose k-sample runs are made (each costs max(ks) greedy runs)
    temperature: float = 1.0           # for the k samples
    latency_problems: int = 20         # timed one problem at a time, the paper's setting
    latency_rounds: int = 3            # back-to-back rounds, methods alternating, medians reported
    # whose greedy points are timed: the budget GRPO model belongs to the RL comparison at a fixed number
    # of children, not to a claim point
    timed_roles: tuple[str, ...] = tuple(role for role in ROLES if role != "apr_budget_grpo")
    bootstrap: int = 2000
    max_batch: int = 64
    out: str = "data/results"          # summary.json and the figures
    records: str = "runs/reproduce/cpu"  # every run's records (resumable JSONL)

    def __post_init__(self):
        for name in ("n_problems", "sample_seeds", "latency_problems", "latency_rounds", "bootstrap", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.windows or min(self.windows) < 16 or self.derivation_window not in self.windows[:-1]:
            raise ValueError("windows must be sorted token counts >= 16, and derivation_window one of the smaller ones")
        if list(self.windows) != sorted(set(self.windows)) or min(self.ks) != 1 or self.temperature <= 0:
            raise ValueError("windows must be sorted and distinct, ks must start at 1, temperature must be > 0")
        if set(self.timed_roles) - set(ROLES):
            raise ValueError(f"timed_roles must be among {', '.join(ROLES)}, got {', '.join(self.timed_roles)}")
        if self.sosp_room and self.room_window <= self.windows[-1]:
            raise ValueError(f"room_window ({self.room_window}) must be larger than the models' own window "
                             f"({self.windows[-1]}) when sosp_room is set")

    def at(self, root: str | os.PathLike) -> "ReproduceConfig":
        """The same configuration with its relative paths under ``root`` (a notebook runs in notebooks/)."""
        def move(path: str) -> str:
            return path if os.path.isabs(path) else os.path.join(root, path)

        paths = {name: move(getattr(self, name)) for name in ("problems", "out", "records", "contrast") if getattr(self, name)}
        models = {role: tuple(move(c) for c in getattr(self, role)) for role in ROLES}
        return dataclasses.replace(self, **paths, **models)


REPRODUCE_PRESETS: dict[str, ReproduceConfig] = {
    # A miniature for tests and notebook 06: the tiny models (trained on the cpu task, not yet solving it)
    # stand in for every role, so the plumbing runs end to end in about a minute; its numbers mean nothing.
    "tiny": ReproduceConfig(n_problems=4, sosp_sft=("data/tiny-sosp",), apr_sft=("data/tiny-apr",),
                            sosp_grpo=(), apr_grpo=(), sosp_budget=("data/tiny-sosp",),
                            apr_budget=("data/tiny-apr",), apr_budget_grpo=(), sosp_room=("data/tiny-sosp",),
                            room_window=512,
                            windows=(256, 384), derivation_window=256,
                            token_budgets=(256, 384), sub_call_budgets=(2, 4), ks=(1, 2), sample_seeds=1,
                            latency_problems=2, latency_rounds=2, bootstrap=200, out="runs/reproduce/tiny/results",
                            records="runs/reproduce/tiny"),
    "cpu": ReproduceConfig(),
    # The deep task (4 numbers): reported on its test split, which no choice of settings has seen. Sized
    # to the CPU: an APR run of 100 problems took 200-330 s at one thread, its 400 sampled trees 1,000 s,
    # a SoS+ run under a minute (docs/results.md); `reproduce --only ROLES` splits it over two processes.
    # It spans sessions, so its records are committed (data/results-cpu4/records) and a rerun resumes them
    "cpu4": ReproduceConfig(problems="data/countdown-cpu4/problems_test.jsonl", n_problems=100,
                            sosp_sft=("data/cpu4-sosp", "data/seeds/cpu4-sosp-seed1", "data/seeds/cpu4-sosp-seed2"),
                            apr_sft=("data/cpu4-apr", "data/seeds/cpu4-apr-seed1", "data/seeds/cpu4-apr-seed2"),
                            # the cpu4 GRPO preset from each SFT seed (data/README.md); a seed not yet run is
                            # reported as not evaluated
                            sosp_grpo=("data/cpu4-sosp-grpo", "data/seeds/cpu4-sosp-grpo-seed1",
                                       "data/seeds/cpu4-sosp-grpo-seed2"),
                            apr_grpo=("data/cpu4-apr-grpo", "data/seeds/cpu4-apr-grpo-seed1",
                                      "data/seeds/cpu4-apr-grpo-seed2"),
                            sosp_budget=(), apr_budget=(), apr_budget_grpo=(),
                            sosp_room=("data/cpu4-sosp-room",), room_window=4096,
                            task="4 numbers", contrast="data/results/summary.json",
                            windows=(1024, 1536), derivation_window=1024, token_budgets=(1024, 1536),
                            ks=(1, 2, 4), sample_seeds=1,
                            # the latency claim is the SFT models' and the room model's; RL has its own row
                            timed_roles=("sosp_sft", "apr_sft", "sosp_room"),
                            out="data/results-cpu4", records="data/results-cpu4/records"),
    # One T4: the models a t4-profile run ships (notebooks 03 and 05 under APR_PROFILE=t4; none committed)
    "t4": ReproduceConfig(problems="runs/t4/data/problems_val.jsonl", n_problems=500, sosp_sft=("runs/t4/sosp",),
                          apr_sft=("runs/t4/apr",), sosp_grpo=("runs/t4/sosp-grpo",), apr_grpo=("runs/t4/apr-grpo",),
                          sosp_budget=("runs/t4/sosp-budget",), apr_budget=("runs/t4/apr-budget",), apr_budget_grpo=(),
                          windows=(768, 1024, 1280, 1536), derivation_window=1024,
                          token_budgets=(768, 1024, 1280, 1536), sub_call_budgets=(3, 4, 5, 6), sample_seeds=1,
                          out="runs/t4/results", records="runs/reproduce/t4"),
    # The paper's scale: models a gpu-profile run ships there (none are committed)
    "gpu": ReproduceConfig(problems="runs/gpu/data/problems_val.jsonl", n_problems=1000,
                           sosp_sft=("runs/gpu/sosp",), apr_sft=("runs/gpu/apr",), sosp_grpo=("runs/gpu/sosp-grpo",),
                           apr_grpo=("runs/gpu/apr-grpo",), sosp_budget=("runs/gpu/sosp-budget",),
                           apr_budget=("runs/gpu/apr-budget",), apr_budget_grpo=(), windows=(1024, 2048, 3072, 4096),
                           derivation_window=2048, token_budgets=(1024, 2048, 3072, 4096),
                           sub_call_budgets=(2, 4, 6, 8, 10), sample_seeds=1, out="runs/gpu/results",
                           records="runs/reproduce/gpu"),
}


def get_reproduce_config(name: str | None = None, **changes) -> ReproduceConfig:
    """The reproduction preset of profile ``name`` (default ``$APR_PROFILE`` or cpu), with ``changes``."""
    base = REPRODUCE_PRESETS[get_profile(name).name]
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def get_profile(name: str | None = None) -> Profile:
    """Return the profile ``name``, or the one named by ``$APR_PROFILE`` (default ``cpu``)."""
    name = name or os.environ.get(PROFILE_ENV_VAR) or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} "
                         f"(set {PROFILE_ENV_VAR} or pass --profile)")
    return PROFILES[name]


def print_environment(profile: Profile, packages=("torch", "transformers", "trl", "plotly", "ipywidgets")) -> None:
    """The notebooks' first cell: versions, profile and where to change it; it also picks the
    figures' renderer (:func:`apr_mini.renderer.use_notebook_renderer`)."""
    import platform
    from importlib import metadata

    from . import __version__
    from .renderer import use_notebook_renderer

    versions = [f"python {platform.python_version()}", f"apr_mini {__version__}"]
    for name in packages:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    print(" | ".join(versions))
    print(f"profile: {profile.name!r} (set ${PROFILE_ENV_VAR} to one of {sorted(PROFILES)} to change it)")
    use_notebook_renderer()


def get_device(verbose: bool = True) -> str:
    """Pick ``cuda``, ``mps`` or ``cpu`` (in that order) and say which."""
    import torch

    if torch.cuda.is_available():
        device = "cuda"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "mps"
    else:
        device = "cpu"
    if verbose:
        print(f"apr-mini device: {device}")
    return device
