#!/usr/bin/env bash
# The commands of docs/your_task.md, in order, on one task: an SB3 expert, noisy demonstrations, a 1-ReFlow policy,
# its evaluation, fine-tuning through rl_zoo3 with the registry's default block (the noise calibration on, as by
# default) for each seed, replay, a video and the results table. tests/test_your_task.py checks that the guide's
# commands are these and runs this script on a tiny setting.
#
#   bash benchmarks/your_task.sh InvertedDoublePendulum-v4 ~/runs/your_task/idp
#
# Sizes come from the environment (defaults: the InvertedDoublePendulum-v4 run of docs/your_task.md).
set -euo pipefail
ENV_ID=$1
OUT=$2
EXPERT_STEPS=${EXPERT_STEPS:-60000}
N_TRANSITIONS=${N_TRANSITIONS:-50000}
DEMO_NOISE=${DEMO_NOISE:-0.2}
GRADIENT_STEPS=${GRADIENT_STEPS:-20000}
FINETUNE_CHUNKS=${FINETUNE_CHUNKS:-25000}
EVAL_FREQ=${EVAL_FREQ:-5000}
EVAL_EPISODES=${EVAL_EPISODES:-10}
SEEDS=${SEEDS:-"301 302 303"}
PRETRAIN_EXTRA=${PRETRAIN_EXTRA:-}
mkdir -p "$OUT"

# 1. an expert, trained with stock SB3 (any SB3 or sb3-contrib model works)
python -c "from stable_baselines3 import SAC; SAC('MlpPolicy', '$ENV_ID', seed=0).learn($EXPERT_STEPS).save('$OUT/expert')"

# 2. demonstrations: the expert with Gaussian action noise
python -m sb3_reinflow.tools.collect_demos --algo sac --model "$OUT/expert.zip" --env "$ENV_ID" \
    --noise "$DEMO_NOISE" --n-transitions "$N_TRANSITIONS" --output "$OUT/data"

# 3. a 1-ReFlow policy cloned from them, and what it holds
python -m sb3_reinflow.tools.pretrain --env "$ENV_ID" --data "$OUT/data" --flow-model reflow \
    --n-gradient-steps "$GRADIENT_STEPS" --no-progress-bar --output "$OUT/policy.safetensors" $PRETRAIN_EXTRA
python -m sb3_reinflow.tools.inspect_policy "$OUT/policy.safetensors"

# 4. the start under every protocol (the deployed mode, and the noisy chain PPO will learn from)
python -m sb3_reinflow.tools.evaluate_pretrained --checkpoint "$OUT/policy.safetensors" --env "$ENV_ID" \
    --protocols mean zero random stochastic --n-episodes "$EVAL_EPISODES" --data "$OUT/data" | tee "$OUT/start.md"

# 5. fine-tuning with the registry's default block
for SEED in $SEEDS; do
    python -m rl_zoo3.train --algo reinflow_ppo --env "$ENV_ID" -params pretrained_policy:"'$OUT/policy.safetensors'" \
        eval_protocols:"['stochastic']" -n "$FINETUNE_CHUNKS" --seed "$SEED" -f "$OUT/zoo" \
        --eval-freq "$EVAL_FREQ" --eval-episodes "$EVAL_EPISODES" --tensorboard-log "$OUT/tb" 2>&1 \
        | tee "$OUT/finetune_$SEED.log"
done

# 5b. the same from a registry block of your own (a short run: the block is read and the run starts)
cp "$(python -c 'import sb3_reinflow.zoo, os; print(os.path.dirname(sb3_reinflow.zoo.__file__))')/hyperparams/reinflow_ppo.yml" "$OUT/my_reinflow_ppo.yml"
printf '\n%s:\n  <<: *defaults\n  pretrained_policy: "%s"\n  eval_protocols: ["stochastic"]\n' "$ENV_ID" "$OUT/policy.safetensors" >> "$OUT/my_reinflow_ppo.yml"
python -m rl_zoo3.train --algo reinflow_ppo --env "$ENV_ID" -conf "$OUT/my_reinflow_ppo.yml" -n 2048 --seed 0 -f "$OUT/zoo_conf"

# 6. replay and a video of the first run
python -m rl_zoo3.enjoy --algo reinflow_ppo --env "$ENV_ID" -f "$OUT/zoo" --exp-id 1 -n 500 --no-render
python -m rl_zoo3.record_video --algo reinflow_ppo --env "$ENV_ID" -f "$OUT/zoo" --exp-id 1 -n 300 -o "$OUT/videos"

# 7. the results table: start and every evaluation of each run
python benchmarks/your_task_results.py --env "$ENV_ID" --start "$OUT/start.md" --zoo "$OUT/zoo" --output "$OUT/results.csv" \
    --plot "$OUT/results.png"
