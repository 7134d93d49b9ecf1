"""Collect ``Episodes`` from a task family's vectorized environment (docs/architecture.md §2 step 2, §7).

Every time step makes exactly one policy call for all ``N = M × E`` sub-environments, each task with its own
(adapted) parameters. Observations from the simulator become float32 tensors on the learner device here and
nowhere else.
"""

from __future__ import annotations

import torch
from torch import Tensor

from envs.base import UNSTABLE, MetaVectorEnv
from maml_rl.episodes import Episodes
from maml_rl.errors import NonFiniteError
from maml_rl.policies import Params, Policy, Rows, batched_forward


def _as_tensor(x: object, device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(x, device=device).to(dtype)


@torch.no_grad()
def sample_episodes(
    env: MetaVectorEnv,
    policy: Policy,
    params: Params,
    num_tasks: int,
    generator: torch.Generator,
    seed: int,
    action_scale: float = 1.0,
    rows: Rows | None = None,
    frozen: Tensor | None = None,
) -> Episodes:
    """Run one episode in every sub-environment of ``env`` for ``env.max_episode_steps`` steps.

    Args:
        env: vectorized environment whose tasks are already set (sub-env ``n`` runs task ``n // E``).
        policy: the policy module (structure only).
        params: per-task parameters ``[M, ...]``.
        num_tasks: ``M``; ``env.num_envs`` must be a multiple of it.
        generator: torch generator on the learner device for action noise.
        seed: seed for ``env.reset``.
        action_scale: continuous actions are divided by this before they reach the environment.
        rows: ``(offset, total)`` when ``env`` is one shard of a batch split across processes (its
            ``set_rows``): action noise is drawn for all ``total`` sub-environments and sliced, so the episodes do
            not depend on the split. None: ``env``'s own rows (``env.row_offset``, ``env.batch_rows``).
        frozen: ``[N]`` bool, sub-environments not to simulate this episode (``env.freezes_rows`` must be True):
            they start terminated, so their episodes are one masked-in step with reward 0, and every random draw
            (reset, action noise) is the same as without it, so the other sub-environments' episodes are too.

    Returns:
        ``Episodes`` with ``[T, N, …]`` tensors on the generator's device.

    Raises:
        NonFiniteError: the policy produced NaN or infinite distribution parameters (for instance after an
            inner step with a huge step size). Checked once per episode, not per step, so the time-step loop
            never waits for the device.
    """
    n, steps = env.num_envs, env.max_episode_steps
    if n % num_tasks:
        raise ValueError(f"env has {n} sub-environments, not a multiple of {num_tasks} tasks")
    device = generator.device
    per_task = n // num_tasks
    if rows is None:
        rows = (env.row_offset, env.batch_rows)
    if frozen is not None and not env.freezes_rows:
        raise ValueError(f"{type(env).__name__} cannot freeze sub-environments (freezes_rows is False)")
    obs, _ = env.reset(seed=seed, options=None if frozen is None else {"frozen_mask": frozen})
    obs = _as_tensor(obs, device, torch.float32)
    observations = torch.empty((steps, n, obs.shape[-1]), device=device)
    rewards = torch.zeros((steps, n), device=device)
    mask = torch.zeros((steps, n), device=device)
    alive = torch.ones(n, device=device)
    unstable = torch.zeros(n, dtype=torch.bool, device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)  # all policy outputs so far were finite
    actions_list: list[Tensor] = []
    for t in range(steps):
        observations[t] = obs
        dist = batched_forward(policy, params, obs.view(num_tasks, per_task, -1))
        finite = finite & torch.stack([torch.isfinite(x).all() for x in dist]).all()
        try:
            action = policy.sample(dist, generator, rows).flatten(0, 1)
            actions_list.append(action)
            env_action = action if policy.discrete else action / action_scale
            obs, reward, terminated, _, info = env.step(env_action)
        except (RuntimeError, ValueError) as error:  # multinomial on NaN probabilities, NaN actions refused
            if not bool(finite):
                raise NonFiniteError(f"non-finite policy output at time step {t}") from error
            raise
        obs = _as_tensor(obs, device, torch.float32)
        mask[t] = alive
        rewards[t] = _as_tensor(reward, device, torch.float32) * alive
        alive = alive * (1.0 - _as_tensor(terminated, device, torch.float32))
        if UNSTABLE in info:
            unstable |= _as_tensor(info[UNSTABLE], device, torch.bool)
    num_unstable, num_non_finite = torch.stack([unstable.sum(), (~finite).long()]).tolist()  # one host sync
    if num_non_finite:
        raise NonFiniteError("non-finite policy output")
    return Episodes(
        observations=observations,
        actions=torch.stack(actions_list),
        rewards=rewards,
        mask=mask,
        num_tasks=num_tasks,
        num_unstable=int(num_unstable),
    )
