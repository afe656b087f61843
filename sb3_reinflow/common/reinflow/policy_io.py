"""Saving and loading a policy as a pretrained-policy file (safetensors + JSON, no pickle)."""

import io
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import torch as th
from stable_baselines3.common.utils import get_device

from sb3_reinflow.common.errors import PolicyFileError
from sb3_reinflow.common.flow.networks import NoiseNet
from sb3_reinflow.common.policy_files import PolicyCheckpoint, is_critic_key, read_pretrained, save_policy_file
from sb3_reinflow.common.reinflow.arguments import known_policy_kwargs

SelfPolicyFile = TypeVar("SelfPolicyFile", bound="PolicyFileMixin")


class PolicyFileMixin:
    """
    ``save`` / ``load`` of :class:`~sb3_reinflow.common.reinflow.policies.ReinFlowPolicy` in the policy-file format
    (:mod:`sb3_reinflow.common.policy_files`), and the state-dict loading every loader shares.
    """

    def save(self, path: str | Path, env_id: str | None = None, critic: bool = True) -> None:  # type: ignore[override]
        """
        Save the policy as a pretrained-policy file (safetensors weights + plain-JSON config; see
        :mod:`sb3_reinflow.common.policy_files`), atomically and to ``path`` exactly as given.

        :param path: destination, conventionally ``*.safetensors``
        :param env_id: id of the env it was trained on (default: :attr:`env_id`), checked when it is loaded
        :param critic: keep the critic's weights; False for a behaviour-cloned policy, whose critic was never trained
            (the loading policy then keeps its own initial critic)
        """
        save_policy_file(
            path,
            self._state_dict_without_aliases(),
            self.observation_space,
            self.action_space,
            self._get_constructor_parameters(),
            env_id=env_id if env_id is not None else self.env_id,
            critic=critic,
        )

    @classmethod
    def load(
        cls: type[SelfPolicyFile], path: str | Path | io.BufferedIOBase, device: th.device | str = "auto"
    ) -> SelfPolicyFile:
        """
        Load a policy file written by ``ReinFlowPolicy.save`` (or ``python -m sb3_reinflow.tools.pretrain``) without
        unpickling anything.

        :param path: file path or buffer
        :param device: torch device
        :return: the policy, with ``env_id`` set to the env it was trained on (when recorded)
        """
        if isinstance(path, io.BufferedIOBase):
            with tempfile.TemporaryDirectory() as folder:
                copy = Path(folder) / "policy"
                copy.write_bytes(path.read())
                return cls.load(copy, device)
        checkpoint = read_pretrained(path, device="cpu")  # the file's checks (policy_schema) run here
        policy_kwargs = known_policy_kwargs(cls, checkpoint.policy_kwargs, str(path))
        try:
            policy = cls(checkpoint.observation_space, checkpoint.action_space, lambda _: 0.0, **policy_kwargs)
            policy.load_checkpoint(checkpoint)
        except (ValueError, TypeError, NotImplementedError, RuntimeError) as error:
            raise PolicyFileError(f"{path}: the policy it describes cannot be built ({error})") from error
        policy.env_id = checkpoint.env_id
        return policy.to(get_device(device))

    def load_checkpoint(self, checkpoint: PolicyCheckpoint) -> None:
        """
        Load a policy file's tensors: every one of this policy's, or for a file written without the critic
        (``checkpoint.critic`` False) every one but the critic's, which keep this policy's initialisation.

        :param checkpoint: the file's contents
        :raises RuntimeError: a tensor missing (other than the critic's of a file without it) or unexpected
        """
        if checkpoint.critic:
            self.load_state_dict(checkpoint.state_dict)
            return
        result = self.load_state_dict(checkpoint.state_dict, strict=False)
        missing = [key for key in result.missing_keys if not is_critic_key(key)]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"missing tensors {missing}, unexpected tensors {result.unexpected_keys}")

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """
        Like :meth:`torch.nn.Module.load_state_dict`, with an error naming the parameter and both shapes when a
        checkpoint does not fit this policy. The noise bounds are this policy's (``min_noise_std``,
        ``max_noise_std``, set at construction or by ReinFlowPPO's noise schedule): they are not in state dicts, and
        the bound buffers that older files hold are skipped, so every loader gives a policy file the bounds its
        arguments name.
        """
        own = self.state_dict()
        state_dict = self._with_aliases(state_dict, own)
        for key, value in state_dict.items():
            if key in own and tuple(own[key].shape) != tuple(value.shape):
                raise ValueError(
                    f"Cannot load parameter {key!r}: the checkpoint has shape {tuple(value.shape)} but this policy "
                    f"has {tuple(own[key].shape)}; build the policy with the same spaces and policy_kwargs "
                    "(velocity_net_arch, n_flow_steps, action chunk horizon...) as the checkpoint"
                )
        without_bounds = {key: value for key, value in state_dict.items() if not key.endswith(NoiseNet.BOUND_BUFFERS)}
        return super().load_state_dict(without_bounds, strict=strict, assign=assign)

    def _state_dict_without_aliases(self) -> dict[str, th.Tensor]:
        """
        The state dict with each tensor once: SB3 registers the actor's features extractor under two names
        (``features_extractor`` and ``pi_features_extractor``) when actor and critic have their own encoders, which
        would store a pixel policy's CNN twice. :meth:`load_state_dict` restores the second name.
        """
        kept: dict[str, th.Tensor] = {}
        seen = set()
        for key, value in self.state_dict().items():
            identity = (value.data_ptr(), value.dtype, tuple(value.shape), value.stride())
            if value.numel() > 0 and identity in seen:
                continue
            seen.add(identity)
            kept[key] = value
        return kept

    @staticmethod
    def _with_aliases(state_dict: Any, own: dict[str, th.Tensor]) -> Any:
        """``state_dict`` with the keys :meth:`_state_dict_without_aliases` left out filled from their alias."""
        names_of: dict[tuple, list[str]] = {}
        for key, value in own.items():
            if value.numel() > 0:
                names_of.setdefault((value.data_ptr(), value.dtype, tuple(value.shape), value.stride()), []).append(key)
        filled = dict(state_dict)
        for names in names_of.values():
            present = [name for name in names if name in state_dict]
            for name in names:
                if name not in filled and present:
                    filled[name] = state_dict[present[0]]
        return filled

    def with_options(self: SelfPolicyFile, **overrides: Any) -> SelfPolicyFile:
        """
        A new policy with this one's weights and some constructor options changed (for example ``n_flow_steps``,
        ``deterministic_mode`` or the noise bounds), used by ``python -m sb3_reinflow.tools.evaluate_pretrained`` and
        the benchmark scripts. The new policy has the noise bounds of its own options.

        :param overrides: constructor arguments to change
        :return: the new policy, on this policy's device, with the same ``env_id``
        """
        policy = type(self)(**{**self._get_constructor_parameters(), **overrides})
        policy.load_state_dict(self.state_dict())
        policy.env_id = self.env_id
        return policy.to(self.device)
