"""Action validation shared by every vectorized environment in ``envs`` (the ``envs.base`` action contract).

``ActionValidator`` turns the actions given to ``step`` into a tensor the dynamics can use: ``[N, act_dim]``
floats clipped to a ``Box`` space, or ``[N]`` int64 indices into a ``Discrete`` one. Malformed input (wrong
shape, non-numeric or bool dtype) always raises ``ValueError`` at once. Invalid *values* (NaN or infinity,
non-integral or out-of-range discrete actions) raise at once too, unless the checks are *deferred*: then the
validator only sets a device flag (no host synchronization on a GPU), passes the values on (non-finite floats
propagate into the state, out-of-range discrete actions are clamped) and the environment's next ``reset`` calls
``raise_deferred`` once per episode.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

#: float dtypes whose CPU tensors share memory with a numpy array (``Tensor.numpy()``)
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


class ActionValidator:
    """Validate and clip ``[N, ...]`` actions for one action space; see the module docstring.

    >>> validate = ActionValidator(space, num_envs=800, device="cpu", dtype=torch.float64)
    >>> action = validate(actions)        # [800, act_dim] float64, clipped to the space
    >>> validate.raise_deferred()         # in reset(): raises if a deferred check failed since the last call

    Args:
        space: the single-environment action space (``Box`` or ``Discrete``).
        num_envs: ``N``.
        device: where the validated tensor lives.
        dtype: float dtype of validated ``Box`` actions (float32 for torch dynamics, float64 for MuJoCo).
        deferred: defer value checks to ``raise_deferred`` (default: on every non-CPU device).
    """

    def __init__(
        self,
        space: gym.spaces.Box | gym.spaces.Discrete,
        num_envs: int,
        *,
        device: Any = "cpu",
        dtype: torch.dtype = torch.float32,
        deferred: bool | None = None,
    ) -> None:
        if not isinstance(space, gym.spaces.Box | gym.spaces.Discrete):
            raise TypeError(f"action spaces must be Box or Discrete, got {type(space).__name__}")
        self.space = space
        self.device = torch.device(device)
        self.dtype = dtype
        self.shape = (int(num_envs), *(space.shape or ()))
        #: check values without a host synchronization; the next ``raise_deferred`` raises
        self.deferred = self.device.type != "cpu" if deferred is None else bool(deferred)
        self._invalid = torch.zeros((), dtype=torch.bool, device=self.device)
        if isinstance(space, gym.spaces.Box):
            self._low = torch.as_tensor(space.low, dtype=dtype, device=self.device)
            self._high = torch.as_tensor(space.high, dtype=dtype, device=self.device)

    def __call__(self, actions: Any) -> Tensor:
        """``actions`` (numpy or torch, any device) validated: ``dtype`` ``[N, *shape]`` clipped to a ``Box``, or
        int64 ``[N]`` indices from 0 for a ``Discrete`` space. Raises ``ValueError`` naming the problem."""
        if isinstance(actions, Tensor):
            tensor = actions.detach()
        else:
            array = np.asarray(actions)
            if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
                raise ValueError(f"actions must be numeric, got dtype {array.dtype}")
            tensor = torch.as_tensor(array)
        if tuple(tensor.shape) != self.shape:
            raise ValueError(f"actions must have shape {list(self.shape)}, got {list(tensor.shape)}")
        if tensor.dtype == torch.bool or tensor.is_complex():
            raise ValueError(f"actions must be real numbers, got dtype {tensor.dtype}")
        tensor = tensor.to(self.device)
        if tensor.is_floating_point():
            if tensor.device.type == "cpu" and tensor.dtype in _NUMPY_FLOATS and not self.deferred:
                # numpy's check on the same memory costs a third of torch's per-call overhead
                if not np.isfinite(tensor.numpy()).all():
                    raise ValueError("actions must be finite (got NaN or infinity)")
            else:
                self._check(torch.isfinite(tensor).all(), "actions must be finite (got NaN or infinity)")
        if isinstance(self.space, gym.spaces.Box):
            return torch.clamp(tensor.to(self.dtype), self._low, self._high)
        if tensor.is_floating_point():
            self._check((tensor == tensor.round()).all(), "discrete actions must be integers")
        tensor = tensor.to(torch.int64)
        low, high = int(self.space.start), int(self.space.start) + int(self.space.n)
        out_of_range = (tensor < low) | (tensor >= high)
        if self.deferred:
            self._check(~out_of_range.any(), "")
            return torch.clamp(tensor, low, high - 1) - low
        if bool(out_of_range.any()):
            bad = tensor[out_of_range][:5].tolist()
            raise ValueError(f"discrete actions must lie in [{low}, {high}), got {bad}")
        return tensor - low

    def raise_deferred(self) -> None:
        """Raise ``ValueError`` (once) if a deferred check failed since the last call; one synchronization."""
        if not self.deferred or not bool(self._invalid):
            return
        self._invalid = torch.zeros((), dtype=torch.bool, device=self.device)
        what = ("non-finite actions (NaN or infinity)" if isinstance(self.space, gym.spaces.Box)
                else "non-finite, non-integer or out-of-range actions")
        raise ValueError(f"invalid actions: {what} were passed to step() during the last episode")

    def _check(self, valid: Tensor, message: str) -> None:
        """Raise ``ValueError(message)`` unless ``valid``; with deferred checks, remember it instead."""
        if self.deferred:
            self._invalid = self._invalid | ~valid
        elif not bool(valid):
            raise ValueError(message)
