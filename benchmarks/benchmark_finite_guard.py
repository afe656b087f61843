"""
Cost of the finite-training guard (``ReinFlowPPO.check_finite_updates``) on a normal update: the same model and
rollout are updated with the guard on and off, alternately, and the median update times are compared.

    OMP_NUM_THREADS=1 python benchmarks/benchmark_finite_guard.py [--repeats 7] [--n-steps 1024] [--device cpu]
"""

import argparse
import copy
import statistics
import time

import torch as th

from sb3_reinflow import ReinFlowPPO
from sb3_reinflow.common.reinflow.finite_guard import FiniteGuard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="updates timed per setting")
    parser.add_argument("--n-steps", type=int, default=1024, help="rollout size")
    parser.add_argument("--batch-size", type=int, default=256, help="minibatch size")
    parser.add_argument("--n-epochs", type=int, default=2, help="epochs per update")
    parser.add_argument("--device", default="cpu", help="torch device")
    args = parser.parse_args()
    # the default ReinFlow networks (velocity net 3 x 512, critic 3 x 256, K = 4) on a small env
    model = ReinFlowPPO(
        "MlpPolicy", "Pendulum-v1", n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs, seed=0,
        device=args.device,
    )  # fmt: skip
    model.learn(args.n_steps)  # one rollout in the buffer (and one update)
    start_state = copy.deepcopy(model.policy.state_dict()), copy.deepcopy(model.policy.optimizer.state_dict())
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for guard in (True, False):
            model.policy.load_state_dict(start_state[0])
            model.policy.optimizer.load_state_dict(start_state[1])
            model.check_finite_updates = guard
            if args.device != "cpu":
                th.cuda.synchronize()
            begin = time.perf_counter()
            model._ppo_update()
            if args.device != "cpu":
                th.cuda.synchronize()
            times[guard].append(time.perf_counter() - begin)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"update time (median of {args.repeats}): guard on {on * 1e3:.1f} ms, guard off {off * 1e3:.1f} ms")
    print(f"guard cost, end to end: {100 * (on - off) / off:+.2f}% of the update (noisy on a shared machine)")
    # the guard's own work, timed directly: the snapshot, the rollout check and the parameter check (its per-minibatch
    # checks read Python floats the update computes anyway)
    guard = FiniteGuard(model.policy, 1)
    begin = time.perf_counter()
    for _ in range(args.repeats):
        guard.snapshot()
        guard.check_rollout(model.rollout_buffer)
        guard.check_parameters()
    own = (time.perf_counter() - begin) / args.repeats
    print(f"guard's own work: {own * 1e3:.2f} ms per update = {100 * own / off:.2f}% of the update")


if __name__ == "__main__":
    main()
