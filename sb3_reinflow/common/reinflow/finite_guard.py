"""
The finite-training guard of ReinFlowPPO's update: a non-finite reward, value, loss term, gradient or parameter stops
the update with a :class:`~sb3_reinflow.common.errors.NonFiniteTrainingError` naming the term and the update, and the
update is undone first (the policy and its optimizer get back the state from before it), so the last good weights
stay usable and are what ``save`` writes.

It reads only numbers the update computes anyway (the losses' ``.item()`` values that SB3 logs, the gradient norm that
``clip_grad_norm_`` returns) and adds one copy of the parameters and optimizer state per update; it never changes the
numerics of a finite update.
"""

import copy
import math
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer

from sb3_reinflow.common.errors import NonFiniteTrainingError

# what to do when each term goes non-finite
_FIXES = {
    "reward": "the env returned it: wrap the env with VecCheckNan(env, raise_exception=True) to find the step, and fix "
    "the env's reward (or a reward wrapper)",
    "value": "the critic's value estimates are non-finite: lower critic_learning_rate, or scale the rewards "
    "(VecNormalize(norm_reward=True), zoo: normalize)",
    "advantage": "check the rewards and values of the rollout (VecCheckNan), and gamma / gae_lambda",
    "policy gradient": "the chains' log-probabilities or the advantages are non-finite: check the noise bounds "
    "(min_noise_std > 0) and the rewards",
    "entropy": "check ent_coef and the noise bounds (min_noise_std, max_noise_std)",
    "BC": "check bc_coef and that the BC reference (the policy when learn started) is finite",
    "consistency": "check consistency_coef and the stored chains of the rollout",
    "loss": "a coefficient is non-finite or too large: check ent_coef, vf_coef, bc_coef and consistency_coef",
    "gradient": "lower learning_rate / critic_learning_rate, or clip the gradient with a smaller max_grad_norm",
    "parameter": "the optimizer step made the weights non-finite: lower learning_rate / critic_learning_rate",
}


class FiniteGuard:
    """
    One update's guard: ``snapshot()`` at its start, ``check_*`` on the way, ``check_parameters()`` at its end.
    A failed check restores the snapshot and raises.

    :param policy: the policy being updated (its ``optimizer`` too)
    :param update: the number of the update, for the messages (1 for the first ``train()`` call)
    :param enabled: False makes every method a no-op (to measure the guard's cost)
    """

    def __init__(self, policy: Any, update: int, enabled: bool = True) -> None:
        self.policy = policy
        self.update = update
        self.enabled = enabled
        self._parameters: list[th.Tensor] = []
        self._optimizer_state: dict[str, Any] | None = None

    def snapshot(self) -> None:
        """Keep a copy of the parameters and of the optimizer state, to undo the update if it fails."""
        if not self.enabled:
            return
        with th.no_grad():
            self._parameters = [parameter.detach().clone() for parameter in self.policy.parameters()]
        self._optimizer_state = copy.deepcopy(self.policy.optimizer.state_dict())

    def restore(self) -> None:
        """Put back the parameters and optimizer state of :meth:`snapshot`."""
        if self._optimizer_state is None:
            return
        with th.no_grad():
            for parameter, saved in zip(self.policy.parameters(), self._parameters, strict=True):
                parameter.copy_(saved)
        self.policy.optimizer.load_state_dict(self._optimizer_state)

    def fail(self, term: str, detail: str) -> None:
        """Undo the update and raise the error naming ``term``."""
        self.restore()
        raise NonFiniteTrainingError(
            f"Update {self.update}: the {term} term is non-finite ({detail}). The update was undone: the policy and its "
            f"optimizer hold the weights from before it (model.save keeps them). Fix: {_FIXES[term]}",
            term=term,
            update=self.update,
        )

    def check_rollout(self, buffer: RolloutBuffer) -> None:
        """The rollout's rewards, values and advantages (GAE has run) must be finite."""
        if not self.enabled:
            return
        for term, array in (("reward", buffer.rewards), ("value", buffer.values), ("advantage", buffer.advantages)):
            finite = np.isfinite(array)
            if not finite.all():
                step, env = (int(index) for index in np.argwhere(~finite)[0])
                self.fail(term, f"{array[step, env]} at rollout step {step} of env {env}")

    def check_terms(self, terms: dict[str, float], loss: float, where: str) -> None:
        """
        :param terms: the minibatch's loss terms (their ``.item()`` values), by name
        :param loss: the total loss, as computed from them
        :param where: epoch and minibatch, for the message
        """
        if not self.enabled:
            return
        for term, value in terms.items():
            if not math.isfinite(value):
                self.fail(term, f"{value} at {where}")
        if not math.isfinite(loss):
            self.fail("loss", f"{loss} at {where}, with finite terms {terms}")

    def check_gradient(self, grad_norm: th.Tensor, where: str) -> None:
        """:param grad_norm: the total gradient norm, as ``clip_grad_norm_`` returns it"""
        if not self.enabled:
            return
        value = float(grad_norm)
        if not math.isfinite(value):
            self.fail("gradient", f"norm {value} at {where}")

    def check_parameters(self) -> None:
        """After the last optimizer step: every parameter must be finite."""
        if not self.enabled:
            return
        with th.no_grad():
            for name, parameter in self.policy.named_parameters():
                if not bool(th.isfinite(parameter).all()):
                    self.fail("parameter", f"{name} after the optimizer step")
