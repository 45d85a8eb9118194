"""GRPO-style policy updates with the default PRM as a dense reward, on GSM8K prompts, on CPU.

Run: python examples/rl_grpo_rewards.py            (about a minute on 2 CPU cores)
     python examples/rl_grpo_rewards.py --dense    (token-level rewards instead of one per answer)
     python examples/rl_grpo_rewards.py --prm DIR  (another exported PRM)

What it does, all local (nothing is downloaded):

1. builds a tiny policy: a byte-level BPE tokenizer trained here and a random 2-layer Llama
   from a config, then a few seconds of supervised warm-up on the four reference solutions
   so that it writes line-by-line answers at all (a real pipeline starts RL from an SFT model);
2. samples a group of answers per question and scores them with the default PRM through
   :class:`prm_plugins.adapters.trl.PRMRewardFunction`, called exactly as TRL's
   ``GRPOTrainer`` calls reward functions (min over steps, plus 1.0 when the final answer is
   right);
3. does a few GRPO-style policy-gradient updates by hand in torch: advantages normalised
   within each question's group, no KL term, one update per batch (so the PPO ratio is 1).
   With ``--dense`` the advantages are per token, from the PRM's per-step rewards placed on
   the policy's tokens (``PRMRewardFunction.token_rewards``), normalised within the group as
   in DeepSeekMath's process-supervised GRPO: a token is credited with the normalised
   rewards of its own step and of every later step.

The policy is tiny and random, so its answers are mostly wrong and the rewards it earns are
low; the point is the data path: completions -> steps -> PRM scores -> rewards -> update.

The four questions and solutions are GSM8K test items 1, 3, 23 and 32 (calculator
annotations removed). GSM8K: MIT License, Copyright (c) 2021 OpenAI.
"""

from __future__ import annotations

import argparse
import time

import torch

from prm_plugins import load_prm
from prm_plugins.adapters.trl import PRMRewardFunction
from prm_plugins.rewards import step_rewards

# GSM8K test items (MIT License, Copyright (c) 2021 OpenAI).
GSM8K = [
    {
        "question": "A robe takes 2 bolts of blue fiber and half that much white fiber.  How "
                    "many bolts in total does it take?",
        "solution": "It takes 2/2=1 bolt of white fiber\nSo the total amount of fabric is "
                    "2+1=3 bolts of fabric\nThe answer is 3.",
        "answer": "#### 3",
    },
    {
        "question": "James decides to run 3 sprints 3 times a week.  He runs 60 meters each "
                    "sprint.  How many total meters does he run a week?",
        "solution": "He sprints 3*3=9 times\nSo he runs 9*60=540 meters\nThe answer is 540.",
        "answer": "#### 540",
    },
    {
        "question": "A candle melts by 2 centimeters every hour that it burns. How many "
                    "centimeters shorter will a candle be after burning from 1:00 PM to "
                    "5:00 PM?",
        "solution": "The candle burns for 5 - 1 = 4 hours.\nThus, the candle will be 2 * 4 = "
                    "8 centimeters shorter.\nThe answer is 8.",
        "answer": "#### 8",
    },
    {
        "question": "John takes care of 10 dogs.  Each dog takes .5 hours a day to walk and "
                    "take care of their business.  How many hours a week does he spend taking "
                    "care of dogs?",
        "solution": "He spends 10*.5=5 hours per day\nThat means he spends 5*7=35 hours per "
                    "week\nThe answer is 35.",
        "answer": "#### 35",
    },
]


def prompt_of(question: str) -> str:
    return f"Question: {question}\nAnswer:\n"


def build_tokenizer() -> object:
    """A byte-level BPE tokenizer trained on the four items, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [prompt_of(x["question"]) + x["solution"] for x in GSM8K] * 4
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")


def build_policy(vocab_size: int, eos_id: int, pad_id: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, eos_token_id=eos_id, pad_token_id=pad_id,
                         bos_token_id=eos_id)
    return LlamaForCausalLM(config)


def warm_up(policy: torch.nn.Module, tokenizer: object, steps: int) -> None:
    """Supervised warm-up on the reference solutions (loss on the answer tokens only)."""
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    rows = []
    for item in GSM8K:
        p = tokenizer(prompt_of(item["question"]))["input_ids"]
        a = tokenizer(item["solution"])["input_ids"] + [tokenizer.eos_token_id]
        rows.append((torch.tensor([p + a]), torch.tensor([[-100] * len(p) + a])))
    policy.train()
    for step in range(steps):
        ids, labels = rows[step % len(rows)]
        loss = policy(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in (0, steps - 1):
            print(f"warm-up step {step + 1:3d}/{steps}: loss {loss.item():.2f}")


def sample(policy: torch.nn.Module, tokenizer: object, prompt: str, n: int,
           max_new_tokens: int) -> tuple[list[int], list[list[int]]]:
    """``n`` sampled completions (ids, cut after the first EOS) of one prompt."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    policy.eval()
    with torch.no_grad():
        out = policy.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(
            1, len(prompt_ids), dtype=torch.long), do_sample=True, temperature=1.0, top_k=0,
            max_new_tokens=max_new_tokens, num_return_sequences=n,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    completions = []
    for row in out[:, len(prompt_ids):].tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id) + 1]
        completions.append(row)
    return prompt_ids, completions


def completion_logprobs(policy: torch.nn.Module, prompt_ids: list[int],
                        completion_ids: list[int]) -> torch.Tensor:
    """Log-probabilities of each completion token under the policy."""
    ids = torch.tensor([prompt_ids + completion_ids])
    logits = policy(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]
    return torch.log_softmax(logits.float(), dim=-1).gather(
        1, torch.tensor(completion_ids)[:, None])[:, 0]


def process_advantages(token_rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Process-supervised GRPO advantages (DeepSeekMath, section 4.1.3) from token rewards.

    Step rewards (the tokens that carry one) are normalised by the mean and std of all step
    rewards in the question's group; a token's advantage is the sum of the normalised
    rewards of the steps that end at or after it.
    """
    carries = token_rewards != 0  # a PRM score of exactly 0.0 does not occur in practice
    normed = torch.zeros_like(token_rewards)
    for start in range(0, len(token_rewards), group_size):
        rows = slice(start, start + group_size)
        values = token_rewards[rows][carries[rows]]
        if values.numel() > 1:
            normed[rows] = (token_rewards[rows] - values.mean()) / (values.std() + 1e-4)
    normed = normed * carries
    return normed.flip(1).cumsum(1).flip(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prm", default=None, help="PRM directory (default: the shipped PRM)")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--warm-up-steps", type=int, default=60)
    parser.add_argument("--dense", action="store_true",
                        help="token-level advantages from the PRM's step rewards")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(2)

    tokenizer = build_tokenizer()
    policy = build_policy(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    warm_up(policy, tokenizer, args.warm_up_steps)
    print(f"policy ready ({time.perf_counter() - start:.0f} s)")

    prm = load_prm(args.prm, device="cpu", long_chains="window")
    reward_fn = PRMRewardFunction(prm, aggregate="min", answer_column="answer")
    step_fn = PRMRewardFunction(prm)  # step scores only, for --dense
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    g = args.group_size

    for iteration in range(1, args.iterations + 1):
        prompts, prompt_ids, comp_ids, golds = [], [], [], []
        for item in GSM8K:
            p_ids, completions = sample(policy, tokenizer, prompt_of(item["question"]), g,
                                        args.max_new_tokens)
            for c in completions:
                prompts.append(item["question"])
                prompt_ids.append(p_ids)
                comp_ids.append(c)
                golds.append(item["answer"])
        texts = tokenizer.batch_decode(comp_ids, skip_special_tokens=True)
        # Called as TRL's GRPOTrainer calls reward functions (keywords + dataset columns).
        rewards = torch.tensor(reward_fn(prompts=prompts, completions=texts,
                                         completion_ids=comp_ids, answer=golds))
        grouped = rewards.view(-1, g)
        advantages = ((grouped - grouped.mean(1, keepdim=True))
                      / (grouped.std(1, keepdim=True) + 1e-4)).view(-1)
        if args.dense:
            token_adv = process_advantages(
                step_fn.token_rewards(prompts, comp_ids, tokenizer, shaping="raw"), g)

        policy.train()
        loss_terms = []
        for i, (p_ids, c_ids) in enumerate(zip(prompt_ids, comp_ids, strict=True)):
            if not c_ids:
                continue
            logp = completion_logprobs(policy, p_ids, c_ids)
            adv = token_adv[i, : len(c_ids)] if args.dense else advantages[i]
            loss_terms.append(-(adv * logp).mean())
        loss = torch.stack(loss_terms).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()

        print(f"\niteration {iteration}: mean reward {rewards.mean():.3f}  "
              f"loss {loss.item():+.3f}  ({time.perf_counter() - start:.0f} s)")
        for q in range(len(GSM8K)):
            group = ", ".join(f"{r:.3f}" for r in grouped[q].tolist())
            print(f"  question {q + 1}: rewards [{group}]")

    # Show the dense signal of one completion: its steps, their PRM scores, and which
    # policy tokens carry the (min-form) rewards.
    best = int(rewards.argmax())
    sr = step_rewards(prompts[best], texts[best], prm)
    print(f"\nbest completion of the last batch (reward {rewards[best]:.3f}):")
    for k, step in enumerate(sr.steps, start=1):
        print(f"  step {k} {step.span}: PRM {step.score:.3f}  {step.text[:70]!r}")
    dense = reward_fn.token_rewards([prompts[best]], [comp_ids[best]], tokenizer,
                                    shaping="min", answer=[golds[best]])[0]
    for pos in torch.nonzero(dense).flatten().tolist():
        token = tokenizer.decode([comp_ids[best][pos]])
        print(f"  token {pos:3d} {token!r:>12}: reward {dense[pos]:+.3f}")
    print(f"\ndone in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
