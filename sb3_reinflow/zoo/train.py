"""Hook-free ``rl_zoo3.train`` with ``reinflow_ppo`` registered (``python -m sb3_reinflow.zoo.train``)."""

from sb3_reinflow.zoo import register


def main() -> None:
    register()
    from rl_zoo3.train import train

    train()


if __name__ == "__main__":
    main()
