"""The pure pieces of `nla rl`: advantages, rewards, the clipped loss, KL estimators, the config."""

import math

import numpy as np
import pytest
import torch

from nla.autoencoder.verbalizer import Explanation
from nla.errors import NLAError
from nla.rl import grpo
from nla.rl.config import RLConfig
from nla.rl.rewards import ReconstructionReward, shaped_rewards


def test_group_advantages_are_standardised_within_each_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, -2.0, -2.0, -2.0, -2.0])
    adv = grpo.group_advantages(rewards, group_size=4)
    first = np.array([1.0, 2.0, 3.0, 6.0])
    assert np.allclose(adv[:4].numpy(), (first - first.mean()) / (first.std() + 1e-6), atol=1e-5)
    assert torch.equal(adv[4:], torch.zeros(4))  # a group that all failed teaches nothing
    # Groups are independent: shifting one group's rewards leaves the other's advantages alone.
    shifted = grpo.group_advantages(rewards + torch.tensor([0.0] * 4 + [5.0] * 4), group_size=4)
    assert torch.allclose(shifted[:4], adv[:4])


def explanation(text, tokens=10):
    return Explanation(text, f"<explanation>{text}</explanation>" if text else "no tags", tokens)


def test_failed_samples_get_the_failure_reward_and_length_is_penalised():
    samples = [explanation("a"), explanation(None), explanation("b", tokens=30)]
    base = lambda explanations, activations: [-0.5] * len(explanations)
    rewards = shaped_rewards(samples, torch.zeros(3, 4), base, failure_reward=-2.0, length_penalty=0.01)
    assert rewards == pytest.approx([-0.5 - 0.1, -2.0, -0.5 - 0.3])


def test_reconstruction_reward_is_minus_the_mse_and_skips_failures():
    gold = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    perfect = ReconstructionReward(lambda texts: gold[[0, 2]] * 3)  # right directions, other norms
    rewards = perfect([explanation("x"), explanation(None), explanation("y")], gold)
    assert rewards[0] == pytest.approx(0.0, abs=1e-6) and rewards[2] == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(rewards[1])
    orthogonal = ReconstructionReward(lambda texts: gold[[1]])([explanation("x")], gold[:1])
    assert orthogonal[0] == pytest.approx(-2.0)  # mse of orthogonal vectors is 2(1 - cos) = 2
    log_reward = ReconstructionReward(lambda texts: gold[[1]], kind="log_mse")([explanation("x")], gold[:1])
    assert log_reward[0] == pytest.approx(-math.log(2.0))


def test_clipped_loss_stops_the_gradient_beyond_the_clip():
    old = torch.zeros(2, 1)
    new = torch.tensor([[0.0], [math.log(1.5)]], requires_grad=True)  # ratio 1 and 1.5
    loss, clipped = grpo.clipped_policy_loss(new, old, torch.tensor([1.0, 1.0]), clip=0.2)
    loss.sum().backward()
    assert new.grad[0, 0] < 0  # inside the clip, a positive advantage pushes the log-prob up
    assert new.grad[1, 0] == 0 and clipped[1, 0] and not clipped[0, 0]  # ratio 1.5 > 1.2: no further push
    # A negative advantage is never clipped from below (min picks the pessimistic term).
    new2 = torch.tensor([[math.log(1.5)]], requires_grad=True)
    grpo.clipped_policy_loss(new2, torch.zeros(1, 1), torch.tensor([-1.0]), clip=0.2)[0].sum().backward()
    assert new2.grad[0, 0] > 0


def test_kl_estimators_are_zero_at_the_reference_and_k3_estimates_the_kl():
    same = torch.log(torch.tensor([[0.2, 0.5]]))
    assert torch.equal(grpo.kl_k1(same, same), torch.zeros(1, 2)) and torch.equal(grpo.kl_k3(same, same),
                                                                                torch.zeros(1, 2))
    policy, reference = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.3, 0.3, 0.4])
    exact = float((policy * (policy / reference).log()).sum())
    tokens = torch.multinomial(policy, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    k1 = grpo.kl_k1(policy.log()[tokens], reference.log()[tokens])
    k3 = grpo.kl_k3(policy.log()[tokens], reference.log()[tokens])
    assert float(k1.mean()) == pytest.approx(exact, abs=0.01) and float(k3.mean()) == pytest.approx(exact, abs=0.01)
    assert (k3 >= 0).all() and (k1 < 0).any()  # k3 is never negative, k1 often is
    assert float(k3.var()) < float(k1.var())


def test_rollout_logprobs_are_reused_where_they_agree_and_the_mismatch_is_logged():
    rollout = torch.tensor([[-1.0, -2.0, -3.0]])
    train = torch.tensor([[-1.0, -2.0005, -2.0]])
    old, agreed = grpo.old_logprobs_from_rollout(rollout, train)
    assert agreed.tolist() == [[True, True, False]] and torch.equal(old, torch.tensor([[-1.0, -2.0, -2.0]]))
    mask = torch.ones(1, 3)
    assert grpo.logprob_mismatch(train, train, mask) == 0.0 and grpo.logprob_mismatch(rollout, train, mask) > 0


@pytest.mark.parametrize("bad", [dict(group_size=1), dict(clip=1.5), dict(reward="mae"), dict(kl_estimator="k2"),
                                 dict(av_lr=0), dict(kl_coef=-1), dict(max_response_tokens=0)])
def test_config_refuses_bad_settings(tmp_path, bad):
    with pytest.raises(NLAError):
        RLConfig(nla=tmp_path, data=tmp_path / "rl.parquet", out=tmp_path / "out", **bad)
