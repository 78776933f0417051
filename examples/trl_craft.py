"""Train SmolLM2-135M-Instruct (`hf:smollm2`) on a Craft task with TRL's GRPOTrainer.

    python examples/trl_craft.py --steps 200 --out runs/trl_craft      # on a GPU
    python examples/trl_craft.py --steps 1 --tasks 4 --generations 2 --max-turns 2 \
        --max-new-tokens 32 --max-completion-length 1024              # a CPU smoke run (minutes)

Each update plays `--generations` whole episodes of one training task (a prompt of
`turngym.integrations.trl.make_dataset`) with the current model, scores each by the env's return
(the task's score; `--reward progress` gives partial credit for the steps of the recipe done), and
takes a GRPO step on the reply tokens only (the env's messages between them are masked out).
Needs the `lm` extra (`pip install -e '.[lm]'` or `make install`); runs on the GPU when there is one.
"""

from __future__ import annotations

import argparse
import os

import torch

from turngym.agents.models import resolve
from turngym.integrations.trl import env_reward, make_dataset, make_rollout_func


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="a checkpoint folder or a packaged name (smollm2)")
    parser.add_argument("--task", default="wood_pickaxe", help="the Craft goal")
    parser.add_argument("--reward", default="progress", choices=["success", "progress"])
    parser.add_argument("--tasks", type=int, default=64, help="training tasks (worlds) in the dataset")
    parser.add_argument("--steps", type=int, default=2, help="GRPO updates")
    parser.add_argument("--generations", type=int, default=4, help="episodes per task and update (the GRPO group)")
    parser.add_argument("--max-turns", type=int, default=6, help="the episode's turn budget")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="tokens per reply")
    parser.add_argument("--max-completion-length", type=int, default=3072, help="tokens per episode after the prompt")
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of every weight")
    parser.add_argument("--out", default="runs/trl_craft", help="the trainer's output folder")
    parser.add_argument("--save", action="store_true", help="save the trained model into --out at the end")
    args = parser.parse_args()

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in trl 1.16
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    craft = {"task": args.task, "action_mode": "skills", "image": False, "max_turns": args.max_turns,
             "reward": args.reward}
    train = make_dataset("turngym/Craft-v0", "train", args.tasks, **craft)
    path = resolve(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model_config = AutoConfig.from_pretrained(path)
    # A checkpoint converted from GGUF may still name its source's quantization although its weights
    # are plain floats; transformers would then refuse to train it.
    if getattr(model_config, "quantization_config", None) is not None:
        del model_config.quantization_config
    model = AutoModelForCausalLM.from_pretrained(path, config=model_config, dtype=torch.float32)
    gpu = torch.cuda.is_available()
    config = GRPOConfig(output_dir=args.out, max_steps=args.steps, learning_rate=args.lr,
                        num_generations=args.generations, per_device_train_batch_size=args.generations,
                        max_completion_length=args.max_completion_length, temperature=1.0, beta=0.0,
                        bf16=gpu and torch.cuda.is_bf16_supported(), use_cpu=not gpu, logging_steps=1,
                        save_strategy="no", report_to=[], seed=0)
    peft = None
    if args.lora:
        from peft import LoraConfig

        peft = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                          task_type="CAUSAL_LM")
    rollout = make_rollout_func(max_new_tokens=args.max_new_tokens)
    trainer = GRPOTrainer(model, reward_funcs=env_reward, args=config, train_dataset=train,
                          processing_class=tokenizer, rollout_func=rollout, peft_config=peft)
    try:
        trainer.train()
    finally:
        rollout.close()
    for record in trainer.state.log_history:
        if "reward" in record:
            print(f"step {record['step']}: mean return {record['reward']:.3f} (std {record['reward_std']:.3f}), "
                  f"{record['completions/mean_length']:.0f} completion tokens")
    if args.save:
        trainer.save_model(args.out)
        print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
