"""The policies' functional forward against torch's own module call (``torch.func.functional_call``)."""

import pytest
import torch
from torch.func import functional_call, vmap

from maml_rl.policies import batched_forward, make_policy


@pytest.mark.parametrize(("discrete", "activation"), [(False, "relu"), (False, "tanh"), (True, "relu"), (True, "tanh")])
def test_batched_forward_equals_functional_call_bit_for_bit(discrete, activation):
    """``batched_forward`` (vmapped ``forward_with``) gives what vmapping ``functional_call`` gives, values and
    gradients bit for bit, so results computed before and after it replaced ``functional_call`` agree."""
    torch.manual_seed(0)
    policy = make_policy(7, 3, discrete, [16, 16], activation, generator=torch.Generator().manual_seed(1))
    params = {
        name: (p.detach() + 0.3 * torch.randn(5, *p.shape)).requires_grad_()
        for name, p in policy.named_parameters()
    }
    obs = torch.randn(5, 11, 7)
    ours = batched_forward(policy, params, obs)
    torch_call = vmap(lambda p, o: functional_call(policy, p, (o,)))(params, obs)
    assert len(ours) == len(torch_call)
    for a, b in zip(ours, torch_call, strict=True):
        assert torch.equal(a, b)
    grads = [torch.autograd.grad(sum(x.square().sum() for x in out), list(params.values()))
             for out in (ours, torch_call)]
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_forward_uses_the_modules_own_parameters():
    policy = make_policy(4, 2, False, [8], "relu", generator=torch.Generator().manual_seed(0))
    obs = torch.randn(6, 4)
    with torch.no_grad():
        policy.log_std.fill_(-0.5)
        policy.mean[0].bias.fill_(0.25)
    mean, log_std = policy(obs)
    expected = policy.mean[2](torch.relu(policy.mean[0](obs)))
    assert torch.equal(mean, expected)
    assert torch.equal(log_std, torch.full((6, 2), -0.5))
