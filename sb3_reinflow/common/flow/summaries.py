"""
The deterministic summaries of ``n_mean_chains`` noisy chains (``deterministic_mode`` "mean", "median", "medoid") and
the fixed noise they are run with.

Each summary mode runs the same observation through ``n_mean_chains`` noisy chains whose standard normal draws are
fixed (drawn once from a generator seeded with ``mean_seed``, shared by every observation), so a deterministic action
depends on the observation only. The fixed draws are a sample, and a summary inherits the sample's error: where the
chain has collapsed onto one action (a policy cloned from a deterministic expert) the final action of chain i is
``a(obs) + std_K(obs) * eps_i`` (the velocity field pulls the earlier noise back, the last transition's noise stays),
so a summary is ``a(obs) + std_K(obs) * s(eps)`` with ``s`` the mean, median or medoid of the fixed draws: a
per-coordinate offset that the observation never averages out; for i.i.d. draws the median's ``s`` is about 1.25
times as large as the mean's (``sqrt(pi / 2)``). The measured offsets, and a task where the median scored below
the mean, are in docs/finetuning.md ("Mean or median of the noisy chain").
The median and the medoid therefore run with **antithetic** draws (:func:`antithetic_noise`: each draw with its
negative, and the all-zero draw when the count is odd), whose per-coordinate median is exactly 0, so for a collapsed
chain the median action is exactly ``a(obs)`` and the medoid the chain nearest to it. ``"mean"`` keeps i.i.d.
draws, with which its published results (docs, registry) are made.
"""

import torch as th

#: the summary modes whose fixed draws are antithetic
ANTITHETIC_MODES: tuple[str, ...] = ("median", "medoid")


def chain_median(chains: th.Tensor) -> th.Tensor:
    """
    Per-coordinate median over sampled chains: the middle order statistic, or the average of the two middle ones for an
    even number of chains (so it is symmetric: negating every chain negates the median).

    :param chains: shape (batch, n_chains, ...)
    :return: shape (batch, ...)
    """
    ordered = chains.sort(dim=1).values
    n_chains = chains.shape[1]
    return 0.5 * (ordered[:, (n_chains - 1) // 2] + ordered[:, n_chains // 2])


def medoid_index(chains: th.Tensor) -> th.Tensor:
    """
    The medoid of each observation's chains: the chain whose final action (the whole flat action chunk) has the least
    sum of Euclidean distances to the final actions of the others; ties go to the lowest index.

    :param chains: shape (batch, n_chains, K + 1, action_dim)
    :return: the index of the medoid chain of each observation, shape (batch,)
    """
    finals = chains[:, :, -1]
    # pairwise distances by hand (th.cdist may use a matrix-product shortcut with rounding that breaks exact ties)
    distances = (finals.unsqueeze(2) - finals.unsqueeze(1)).pow(2).sum(dim=-1).sqrt()
    return distances.sum(dim=2).argmin(dim=1)


def chain_medoid(chains: th.Tensor) -> th.Tensor:
    """
    The medoid chain of each observation (:func:`medoid_index`): one of the given chains, whole, so its final action
    is an action the policy really takes (it never blends two modes of the action distribution).

    :param chains: shape (batch, n_chains, K + 1, action_dim)
    :return: shape (batch, K + 1, action_dim)
    """
    index = medoid_index(chains)
    return chains[th.arange(chains.shape[0], device=chains.device), index]


def summarize_chains(chains: th.Tensor, mode: str) -> th.Tensor:
    """
    :param chains: shape (batch, n_chains, K + 1, action_dim)
    :param mode: ``"mean"``, ``"median"`` (per point and coordinate) or ``"medoid"``
    :return: the summarised chains, shape (batch, K + 1, action_dim)
    """
    if mode == "median":
        return chain_median(chains)
    if mode == "medoid":
        return chain_medoid(chains)
    return chains.mean(dim=1)


def antithetic_noise(n_chains: int, shape: tuple[int, ...], generator: th.Generator) -> th.Tensor:
    """
    Standard normal draws in antithetic pairs: ``n_chains // 2`` draws, their negatives, and for an odd count one
    all-zero draw (the noise-free chain from x_0 = 0). The set is symmetric, so its per-coordinate median is 0.

    :param n_chains: number of draws (>= 1)
    :param shape: the shape of one draw, (K + 1, action_dim)
    :param generator: the seeded CPU generator
    :return: shape (n_chains, *shape)
    """
    half = th.randn((n_chains // 2, *shape), generator=generator)
    parts = [half, -half] + ([th.zeros((1, *shape))] if n_chains % 2 else [])
    return th.cat(parts)
