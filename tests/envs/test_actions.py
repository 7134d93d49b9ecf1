"""``envs._actions.ActionValidator``: the one action check of every vector environment (torch-native and MuJoCo)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs._actions import ActionValidator

BOX = gym.spaces.Box(-1.0, np.array([1.0, 2.0], np.float32), (2,), np.float32)


def test_box_actions_are_clipped_in_the_requested_dtype():
    validate = ActionValidator(BOX, 3, dtype=torch.float64)
    actions = np.array([[-3.0, 0.5], [0.25, 5.0], [1.0, -1.5]], np.float32)
    out = validate(actions)
    assert out.dtype == torch.float64 and out.shape == (3, 2)
    np.testing.assert_array_equal(out.numpy(), [[-1.0, 0.5], [0.25, 2.0], [1.0, -1.0]])
    torch.testing.assert_close(validate(torch.as_tensor(actions)), out, rtol=0, atol=0)
    np.testing.assert_array_equal(validate(np.ones((3, 2), np.int64)).numpy(), [[1.0, 1.0]] * 3)  # integers accepted


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (np.zeros((2, 2)), "shape"),
        (np.zeros((3, 2), bool), "real numbers"),
        (np.array([["a", "b"]] * 3), "numeric"),
        (np.array([[0.0, np.nan]] * 3), "finite"),
        (np.array([[np.inf, 0.0]] * 3), "finite"),
    ],
)
def test_bad_box_actions_raise_at_once_on_the_cpu(actions, message):
    with pytest.raises(ValueError, match=message):
        ActionValidator(BOX, 3)(actions)


def test_discrete_actions_are_zero_based_indices():
    space = gym.spaces.Discrete(4, start=1)
    validate = ActionValidator(space, 3)
    np.testing.assert_array_equal(validate(np.array([1, 4, 2.0])).numpy(), [0, 3, 1])
    with pytest.raises(ValueError, match=r"lie in \[1, 5\)"):
        validate(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integers"):
        validate(np.array([1.5, 1, 2]))


def test_deferred_checks_flag_and_raise_once_at_reset():
    validate = ActionValidator(gym.spaces.Discrete(3), 2, deferred=True)
    np.testing.assert_array_equal(validate(np.array([5, -1])).numpy(), [2, 0])  # clamped, no exception yet
    with pytest.raises(ValueError, match="invalid actions: non-finite, non-integer or out-of-range"):
        validate.raise_deferred()
    validate.raise_deferred()  # cleared
    box = ActionValidator(BOX, 1, deferred=True)
    assert torch.isnan(box(np.array([[np.nan, 0.0]]))).any()  # passed on
    with pytest.raises(ValueError, match="invalid actions: non-finite actions"):
        box.raise_deferred()
    assert ActionValidator(BOX, 1, device="meta").deferred and not ActionValidator(BOX, 1).deferred
