#!/usr/bin/env bash
# Regenerate the "medium" demonstration datasets and the pretrained checkpoints shipped in sb3_reinflow/pretrained.
# Needs the SB3 experts of ../shared/experts (never committed). Run from the repository root, one job at a time:
#   bash benchmarks/make_pretrained.sh [Hopper-v4|Walker2d-v4|HalfCheetah-v4|Ant-v4|Humanoid-v4|all]
# Humanoid-v4 needs the SAC expert trained here (benchmarks/humanoid_expert.py; docs/humanoid.md), HUMANOID_EXPERT=its zip.
set -euo pipefail
EXPERTS=${EXPERTS:-../shared/experts}
STEPS=${STEPS:-40000}
which=${1:-all}

collect() {  # env algo expert noise [extra args]
  local env=$1 algo=$2 expert=$3 noise=$4; shift 4
  [[ $expert == /* ]] || expert="$EXPERTS/$expert"
  python -m sb3_reinflow.tools.collect_demos --algo "$algo" --model "$expert" --env "$env" --noise "$noise" \
    --n-transitions 200000 --seed 0 --output "data/$env-medium" "$@"
}
pretrain() {  # env flow_model [extra args]
  local env=$1 model=$2; shift 2
  python -m sb3_reinflow.tools.pretrain --env "$env" --data "data/$env-medium" --flow-model "$model" --n-gradient-steps "$STEPS" \
    --eval-freq "$STEPS" --n-eval-episodes 10 --seed 0 --output "sb3_reinflow/pretrained/${env}_${model}.safetensors" "$@"
}

if [[ $which == all || $which == Hopper-v4 ]]; then
  collect Hopper-v4 tqc tqc-Hopper-v3/Hopper-v3.zip 0.15
  pretrain Hopper-v4 reflow
  # The Shortcut model trains for 80k steps: at 40k its K=4 return under ReinFlow's evaluation was 116% of the data's
  pretrain Hopper-v4 shortcut --n-gradient-steps 80000 --eval-freq 80000
fi
if [[ $which == all || $which == Walker2d-v4 ]]; then
  collect Walker2d-v4 tqc tqc-Walker2d-v3/Walker2d-v3.zip 0.2
  pretrain Walker2d-v4 reflow
fi
if [[ $which == all || $which == HalfCheetah-v4 ]]; then
  collect HalfCheetah-v4 tqc tqc-HalfCheetah-v3/HalfCheetah-v3.zip 0.5
  pretrain HalfCheetah-v4 reflow
fi
if [[ $which == all || $which == Ant-v4 ]]; then
  # The Ant-v3 expert reads 111 entries whose contact forces (27:) were always zero: pad the 27-d Ant-v4 observation.
  # Noise 0.1 gives medium-expert data (the paper's Ant set is ant-medium-expert); at 0.25 the noisy expert falls in
  # half of its episodes (return 1813), which a cloned policy does not reproduce (see docs/pretraining.md).
  collect Ant-v4 trpo trpo-Ant-v3/Ant-v3.zip 0.1 --vecnormalize "$EXPERTS/trpo-Ant-v3/Ant-v3/vecnormalize.pkl" \
    --pad-obs-to 111
  pretrain Ant-v4 reflow
fi
if [[ $which == all || $which == Humanoid-v4 ]]; then
  # The expert checkpoint at 300k env steps (docs/humanoid.md says why that level): its deterministic action + noise 0.1
  # (its sampled actions were tried and clone worse). Single actions (--horizon 1): 4-step open-loop chunks of this
  # expert's behaviour cannot be cloned; the noise bounds are the registry's (ReinFlow's Humanoid 0.08-0.16).
  collect Humanoid-v4 sac "${HUMANOID_EXPERT:-$HOME/runs/humanoid_expert/sac_300k.zip}" 0.1
  pretrain Humanoid-v4 reflow --horizon 1 --learning-rate 5e-4  # ReinFlow's Humanoid pretraining rate (Hopper: 1e-3)
  python benchmarks/set_policy_file_kwargs.py sb3_reinflow/pretrained/Humanoid-v4_reflow.safetensors \
    '{"min_noise_std": 0.08, "max_noise_std": 0.16}'
fi
