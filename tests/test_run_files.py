"""Reading rl_zoo3's run files (args.yml, config.yml) safely."""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import yaml

from sb3_reinflow.zoo.run_files import monitor_clock, read_monitor, read_run_args, read_run_config, read_run_yaml


def _write_as_rl_zoo3(path: Path, content: OrderedDict) -> None:
    # rl_zoo3's ExperimentManager dumps its OrderedDicts with yaml.dump, which writes their Python tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(content))


def test_reads_the_ordered_dicts_rl_zoo3_writes(tmp_path: Path) -> None:
    args = OrderedDict([("algo", "reinflow_ppo"), ("seed", 201), ("hyperparams", {"n_envs": 2})])
    config = OrderedDict([("env_wrapper", [{"a.B": {"horizon": 4}}]), ("learning_rate", 2e-5)])
    _write_as_rl_zoo3(tmp_path / "PixelCan-v0" / "args.yml", args)
    _write_as_rl_zoo3(tmp_path / "PixelCan-v0" / "config.yml", config)
    assert "python/object/apply:collections.OrderedDict" in (tmp_path / "PixelCan-v0" / "args.yml").read_text()

    assert read_run_args(tmp_path, "PixelCan-v0") == dict(args)
    assert read_run_config(tmp_path, "PixelCan-v0") == dict(config)


def test_refuses_every_other_python_tag(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "args.yml"
    path.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(yaml.constructor.ConstructorError, match=r"python/object/apply:os\.system"):
        read_run_yaml(path)
    assert not marker.exists()


def test_a_file_without_a_mapping_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"config\.yml holds a list"):
        read_run_yaml(path)


def test_monitor_times_go_on_across_a_restarted_clock(tmp_path: Path) -> None:
    # two processes appended to one Monitor file: the second one's clock started again from 0
    path = tmp_path / "0.monitor.csv"
    path.write_text(HEADER + "-1,200,10.0\n-2,200,20.0\n-3,200,4.0\n-4,200,9.0\n")
    episodes = read_monitor(path)
    np.testing.assert_allclose(episodes["t"], [10.0, 20.0, 24.0, 29.0])
    np.testing.assert_allclose(episodes["r"], [-1, -2, -3, -4])
    # a resumed Monitor goes on from the clock as written (9), not from the continued time (29): its next episode,
    # 6 s later, reads as 35 and not 55
    assert monitor_clock(path) == 9.0
    with open(path, "a") as f:
        f.write(f"-5,200,{monitor_clock(path) + 6.0}\n")
    np.testing.assert_allclose(read_monitor(path)["t"], [10.0, 20.0, 24.0, 29.0, 35.0])
    assert monitor_clock(tmp_path / "1.monitor.csv") is None


def test_a_monitor_row_cut_short_is_left_out(tmp_path: Path) -> None:
    # a process killed while writing leaves a partial last row
    path = tmp_path / "0.monitor.csv"
    path.write_text(HEADER + "-1,200,10.0\n-2,200,20.0\n-3,20")
    np.testing.assert_allclose(read_monitor(path)["t"], [10.0, 20.0])
    assert monitor_clock(path) == 20.0


def test_reads_a_tuple_given_in_params(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    _write_as_rl_zoo3(path, OrderedDict([("policy_kwargs", {"net_arch": (64, 64)})]))
    assert "python/tuple" in path.read_text()
    assert read_run_yaml(path) == {"policy_kwargs": {"net_arch": (64, 64)}}


HEADER = '#{"t_start": 0.0, "env_id": "Pendulum-v1"}\nr,l,t\n'
