"""Hook-free ``rl_zoo3.enjoy`` with ``reinflow_ppo`` registered (``python -m sb3_reinflow.zoo.enjoy``)."""

from sb3_reinflow.zoo import register


def main() -> None:
    register()
    from rl_zoo3.enjoy import enjoy

    enjoy()


if __name__ == "__main__":
    main()
