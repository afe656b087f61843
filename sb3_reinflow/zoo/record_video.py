"""
Hook-free ``rl_zoo3.record_video`` with ``reinflow_ppo`` registered:
``MUJOCO_GL=egl python -m sb3_reinflow.zoo.record_video --algo reinflow_ppo --env Hopper-v4 -f logs/ -n 1000``.
"""

import runpy

from sb3_reinflow.zoo import register


def main() -> None:
    register()
    # rl_zoo3.record_video keeps its code under ``if __name__ == "__main__"``.
    runpy.run_module("rl_zoo3.record_video", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
