"""
The PPO update of ReinFlowPPO: SB3's ``PPO.train`` loop with the lines marked ``# ReinFlow:`` (actor and critic
learning rates, the BC and consistency terms), plus the critic warm-up and the noise schedule around it.
"""

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from sb3_reinflow.common.reinflow.finite_guard import FiniteGuard
from sb3_reinflow.common.reinflow.training import bc_loss, consistency_loss, learn_decay_max_std


class ChainPPOUpdate:
    """
    The update methods of :class:`~sb3_reinflow.ReinFlowPPO`, mixed in before SB3's ``PPO``; they read the model's
    attributes (``policy``, ``rollout_buffer``, the PPO and ReinFlow coefficients).
    """

    policy: Any
    rollout_buffer: Any
    logger: Any
    #: the finite-training guard of :meth:`_ppo_update` (False only to measure its cost)
    check_finite_updates = True

    def _update_actor_critic_learning_rates(self, optimizer: th.optim.Optimizer) -> None:
        """Set the actor and critic learning rates separately; the actor's is 0 during critic warm-up."""
        progress = self._current_progress_remaining
        actor_lr = 0.0 if self._n_iterations < self.critic_warmup_iterations else self.lr_schedule(progress)
        critic_lr = self.critic_lr_schedule(progress)
        for group in optimizer.param_groups:
            group["lr"] = critic_lr if group.get("name") == "critic" else actor_lr
        self.logger.record("train/learning_rate", actor_lr)
        self.logger.record("train/critic_learning_rate", critic_lr)

    def _announce_critic_warmup(self) -> None:
        """With ``verbose >= 1``, say when the critic warm-up (actor learning rate 0) starts and when it ends."""
        n_warmup = self.critic_warmup_iterations
        if self.verbose < 1 or n_warmup == 0:
            return
        if self._n_iterations == 0:
            print(
                f"Critic warm-up: the actor is frozen (train/learning_rate = 0) for the first {n_warmup} updates "
                f"({n_warmup * self.n_steps * self.n_envs} timesteps); only the critic learns"
            )
        elif self._n_iterations == n_warmup:
            print(
                f"Critic warm-up done after {n_warmup} updates at {self.num_timesteps} timesteps: "
                f"the actor learns from now on (learning rate {self.lr_schedule(self._current_progress_remaining):.3g})"
            )

    def _apply_noise_std_schedule(self) -> None:
        if self.noise_std_schedule == "constant":
            return
        min_std, max_std = self.policy.min_noise_std, self.policy.max_noise_std
        self.policy.actor.noise_net.set_std_bounds(
            min_std,
            learn_decay_max_std(self._current_progress_remaining, min_std, max_std, decay_ratio=self.noise_decay_ratio),
        )

    def _ppo_update(self) -> None:
        """
        SB3's ``PPO.train`` (stable-baselines3 2.x, Box actions), unchanged but for the lines marked ``# ReinFlow:``:
        the W2 behaviour-cloning term and the consistency term join the loss before the gradient is clipped, and are
        logged as ``train/bc_loss`` and ``train/consistency_loss``. Their minibatch is PPO's own, so SB3's seeding
        covers them. The finite-training guard (``# ReinFlow: guard``) undoes the update and raises a
        ``NonFiniteTrainingError`` naming the term when a reward, value, loss term, gradient or parameter goes
        non-finite; it reads only values the loop computes anyway.
        """
        # ReinFlow: guard: keep the weights to restore, and check the rollout before any step
        guard = FiniteGuard(self.policy, self._n_iterations + 1, self.check_finite_updates)
        guard.snapshot()
        guard.check_rollout(self.rollout_buffer)
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # ReinFlow: separate actor and critic learning rates (SB3: self._update_learning_rate)
        self._update_actor_critic_learning_rates(self.policy.optimizer)
        # Compute current clip range
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        # Optional: clip range for the value function
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        entropy_losses = []
        pg_losses, value_losses = [], []
        clip_fractions = []
        bc_losses, consistency_losses = [], []  # ReinFlow

        continue_training = True
        # train for n_epochs epochs
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            # Do a complete pass on the rollout buffer
            for minibatch, rollout_data in enumerate(self.rollout_buffer.get(self.batch_size)):
                values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, rollout_data.actions)
                values = values.flatten()
                # Normalize advantage
                advantages = rollout_data.advantages
                # Normalization does not make sense if mini batchsize == 1, see GH issue #325
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # ratio between old and new policy, should be one at the first iteration
                ratio = th.exp(log_prob - rollout_data.old_log_prob)

                # clipped surrogate loss
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()

                # Logging
                pg_losses.append(policy_loss.item())
                clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
                clip_fractions.append(clip_fraction)

                if self.clip_range_vf is None:
                    # No clipping
                    values_pred = values
                else:
                    # Clip the difference between old and new value
                    # NOTE: this depends on the reward scaling
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                # Value loss using the TD(gae_lambda) target
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())

                # Entropy loss favor exploration
                if entropy is None:
                    # Approximate entropy when no analytical form
                    entropy_loss = -th.mean(-log_prob)
                else:
                    entropy_loss = -th.mean(entropy)

                entropy_losses.append(entropy_loss.item())

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                # ReinFlow: guard: the terms' logged values, and the loss as computed from them
                terms = {"policy gradient": pg_losses[-1], "value": value_losses[-1], "entropy": entropy_losses[-1]}
                loss_value = terms["policy gradient"] + self.ent_coef * terms["entropy"] + self.vf_coef * terms["value"]

                # ReinFlow: the W2 behaviour-cloning regulariser is a term of the loss (so it is clipped and logged)
                if self.bc_coef > 0 and self._bc_reference is not None:
                    bc_term = bc_loss(self.policy, self._bc_reference, rollout_data.observations)
                    bc_losses.append(bc_term.item())
                    loss = loss + self.bc_coef * bc_term
                    terms["BC"] = bc_losses[-1]
                    loss_value += self.bc_coef * bc_losses[-1]
                # ReinFlow: the noise-free chain's self-distillation toward the stored noisy chains
                if self.consistency_coef > 0:
                    consistency_term = consistency_loss(self.policy, rollout_data.observations, rollout_data.actions)
                    consistency_losses.append(consistency_term.item())
                    loss = loss + self.consistency_coef * consistency_term
                    terms["consistency"] = consistency_losses[-1]
                    loss_value += self.consistency_coef * consistency_losses[-1]

                # Calculate approximate form of reverse KL Divergence for early stopping
                # see issue #417: https://github.com/DLR-RM/stable-baselines3/issues/417
                # and discussion in PR #419: https://github.com/DLR-RM/stable-baselines3/pull/419
                # and Schulman blog: http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                # ReinFlow: guard: no step from a non-finite loss or gradient
                where = f"epoch {epoch + 1}, minibatch {minibatch + 1}"
                guard.check_terms(terms, loss_value, where)
                # Optimization step
                self.policy.optimizer.zero_grad()
                loss.backward()
                # Clip grad norm
                grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                guard.check_gradient(grad_norm, where)  # ReinFlow: guard
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break
        guard.check_parameters()  # ReinFlow: guard

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        # Logs
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        if bc_losses:  # ReinFlow
            self.logger.record("train/bc_loss", np.mean(bc_losses))
        if consistency_losses:  # ReinFlow
            self.logger.record("train/consistency_loss", np.mean(consistency_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
