"""Every example runs, as a user runs it, and prints the outcome its docstring promises.

Each example is run as a subprocess (``python examples/...py`` from the repository root, as
the docstrings say) with the shipped default PRM, and its output is read back: the chosen
answer, the number of retries or revisions, which answers pass and fail, and the margins
behind those outcomes. A margin is asserted wherever the outcome depends on one (no outcome
may hang on a 0.001 difference in scores): a re-quantised or retrained default model that
moves an example's outcome fails here instead of silently changing what a new user sees.

The scripted fake-model examples run in the default suite (a few seconds each); the Ray
Serve example and the local-LLM RL example are marked slow.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from support.paths import ROOT

EXAMPLES = ROOT / "examples"

#: Every example has a test here; a new example without one fails test_every_example_is_run.
TESTED = {
    "langchain/best_of_n.py",
    "langchain/verify_and_retry.py",
    "langchain/agent_self_verification.py",
    "llamaindex/best_of_n_and_evaluator.py",
    "llamaindex/self_critique_and_agent.py",
    "dspy/best_of_n.py",
    "score_default.py",
    "ray_serve_prm.py",
    "rl_grpo_rewards.py",
    "search_under_budget.py",
}
#: Not examples of a use: helpers the examples import, and a tool with its own tests.
NOT_EXAMPLES = {
    "langchain/_problem.py",
    "llamaindex/scripted_llm.py",
    "export_checkpoint.py",  # a conversion tool; its own owner tests it
}

#: The line every adapter example prints about the shipped PRM, and the one line to switch.
SHIPPED_NOTE = "It reliably catches\nwritten arithmetic slips and little else"
STRONGER_PRM_LINE = 'prm = load_prm("path/to/exported-prm", device="cuda")'

#: The pass mark the examples use; every pass or fail must clear it by this much.
THRESHOLD = 0.3
MIN_MARGIN = 0.1


def run_example(name: str, *args: str, timeout: float = 300) -> str:
    """Run ``examples/<name>`` as a user would and return its stdout (stderr on failure)."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def find(pattern: str, text: str) -> re.Match[str]:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no line matches {pattern!r} in:\n{text}"
    return match


def floats(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+", text)]


def assert_shipped_prm_note(out: str) -> None:
    assert SHIPPED_NOTE in out and STRONGER_PRM_LINE in out


def test_every_example_is_run() -> None:
    found = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.py")}
    assert found - NOT_EXAMPLES == TESTED, "every example needs a test in this file"


# -- LangChain -------------------------------------------------------------------------------


def test_langchain_best_of_n_picks_the_correct_answer_by_the_weighted_vote() -> None:
    out = run_example("langchain/best_of_n.py")
    chosen = find(r"^Chosen answer: (\S+) \(selection (\S+), ahead by (\d+\.\d+)\)$", out)
    assert chosen.group(1) == "3" and chosen.group(2) == "weighted_vote"
    assert float(chosen.group(3)) >= 0.2
    # what the vote overrules: majority voting would take the wrong answer
    assert find(r"^Majority vote would choose: (\S+) \(3 of 5 answers\)$", out).group(1) == "4"
    candidates = re.findall(r"^([ *]) candidate (\d): chain score (\d\.\d+), answer (\S+)$",
                            out, re.MULTILINE)
    assert len(candidates) == 5
    slips = [float(s) for _, i, s, _ in candidates if i in ("1", "5")]
    assert max(slips) <= 0.05 + 1e-6  # both arithmetic slips caught by the check
    votes = dict(re.findall(r"(\d+): (\d\.\d+)", find(r"^PRM-weighted votes.*$", out).group(0)))
    assert float(votes["3"]) - float(votes["4"]) == pytest.approx(float(chosen.group(3)),
                                                                  abs=2e-3)
    # streamed through prompt | PRMBestOfN | StrOutputParser(): the chosen text
    streamed = out.split("streams the chosen answer:\n", 1)[1]
    assert streamed.splitlines()[2].strip() == "The answer is 3."
    # honest about the shipped PRM: the wrong-quantity answer is named as not caught
    assert "(2+2=4, arithmetic right)\nscored" in out and "not caught." in out
    assert_shipped_prm_note(out)


def test_langchain_verify_and_retry_retries_once_then_accepts() -> None:
    out = run_example("langchain/verify_and_retry.py")
    accepted = find(r"^Accepted after (\d) LLM call\(s\) \((\d) retry\): chain score "
                    r"(\d\.\d+), (\d\.\d+) above the pass mark$", out)
    assert accepted.group(1) == "2" and accepted.group(2) == "1"
    assert float(accepted.group(4)) >= MIN_MARGIN
    assert find(r"^  call 1: (\w+), chain score (\d\.\d+), final line: The answer is 4\.$",
                out).group(1) == "failed"
    call_2 = find(r"^  call 2: (\w+), chain score (\d\.\d+), final line: The answer is 3\.$",
                  out)
    assert call_2.group(1) == "passed" and float(call_2.group(2)) - THRESHOLD >= MIN_MARGIN
    assert "call 3" not in out
    slip = find(r"^PRMStepVerifier, given an answer with an arithmetic slip \(2\+1=4\): "
                r"(\w+), chain score (\d\.\d+)$", out)
    assert slip.group(1) == "failed" and THRESHOLD - float(slip.group(2)) >= MIN_MARGIN
    assert 'feedback: Step 2 of 3 looks wrong: "So the total amount of fabric is 2+1=4' in out
    # the documented limit: a reasoning error with right arithmetic passes
    quantity = find(r"^PRMStepVerifier, given an answer with a wrong quantity .*: (\w+), "
                    r"chain score (\d\.\d+)$", out)
    assert quantity.group(1) == "passed"
    assert "does not see reasoning errors" in out
    assert_shipped_prm_note(out)


def test_langchain_agent_fails_the_slip_feeds_back_and_accepts_the_revision() -> None:
    out = run_example("langchain/agent_self_verification.py")
    answers = re.findall(r"^\[ai\] answer (\d): chain score (\d\.\d+), (\w+) \(pass mark "
                         r"([\d.]+), retries before it: (\d)\)$", out, re.MULTILINE)
    assert [(n, verdict, retries) for n, _, verdict, _, retries in answers] == [
        ("1", "failed", "0"), ("2", "passed", "1")]
    first, second = (float(score) for _, score, _, _, _ in answers)
    assert THRESHOLD - first >= MIN_MARGIN and second - THRESHOLD >= MIN_MARGIN
    assert "Step 2 of 3 looks wrong" in out and "fix step 2" in out  # the feedback sent
    assert find(r"^Final answer: (\S+), after (\d) revision$", out).groups() == ("3", "1")
    assert_shipped_prm_note(out)


# -- LlamaIndex ------------------------------------------------------------------------------

MUFFINS = ("A baker makes 24 muffins in the morning and half as many in the afternoon. "
           "He sells 30 of them. How many muffins are left?")


def test_llamaindex_best_of_n_query_engine_and_evaluator() -> None:
    out = run_example("llamaindex/best_of_n_and_evaluator.py")
    chosen = find(r"^Chosen answer: (\S+) \(candidate (\d), selection (\S+), ahead by "
                  r"(\d\.\d+)\)$", out)
    assert chosen.group(1) == "6" and chosen.group(3) == "weighted_vote"
    assert float(chosen.group(4)) >= 0.2
    # the RAG query engine: the correct answer, scored against the user's query alone
    assert find(r"^Query engine answer: (.*)$", out).group(1) == "The answer is 6."
    events = re.findall(r"^\[event\] chose candidate (\d) of 4; chain scores: ([\d., ]+); "
                        r"scored against: '(.*)'$", out, re.MULTILINE)
    assert len(events) == 2 and all(q == MUFFINS for _, _, q in events)
    results = re.findall(r"^  answer (\d) \(([\w ,]+)\): (pass|FAIL) \(chain score "
                         r"(\d\.\d+)\)", out, re.MULTILINE)
    verdicts = {kind: (verdict, float(score)) for _, kind, verdict, score in results}
    assert verdicts["arithmetic slip"][0] == "FAIL"
    assert THRESHOLD - verdicts["arithmetic slip"][1] >= MIN_MARGIN
    for kind in ("correct", "correct, reworded"):
        assert verdicts[kind][0] == "pass" and verdicts[kind][1] - THRESHOLD >= MIN_MARGIN
    assert verdicts["wrong operation"][0] == "pass"  # the documented limit, said in the output
    assert 'Step 2 of 4 looks wrong: "In total he makes 24 + 12 = 38 muffins."' in out
    assert "does not see reasoning errors" in out
    assert_shipped_prm_note(out)


def test_llamaindex_self_critique_revises_once_and_the_agent_gets_one_feedback_round() -> None:
    out = run_example("llamaindex/self_critique_and_agent.py")
    workflow, agent = out.split("PRMVerifiedAgentRunner with a ReActAgent:", 1)
    attempts = re.findall(r"^  attempt (\d): score (\d\.\d+), passed (\w+)$", workflow,
                          re.MULTILINE)
    assert [(n, passed) for n, _, passed in attempts] == [("1", "False"), ("2", "True")]
    assert THRESHOLD - float(attempts[0][1]) >= MIN_MARGIN
    assert float(attempts[1][1]) - THRESHOLD >= MIN_MARGIN
    final = find(r"^Final answer: (\S+) \((\d) revision, chain score (\d\.\d+), passed "
                 r"(\w+)\):$", workflow)
    assert final.group(1, 2, 4) == ("6", "1", "True")
    agent_rounds = re.findall(r"^  attempt (\d): score (\d\.\d+)$", agent, re.MULTILINE)
    assert [n for n, _ in agent_rounds] == ["1", "2"]
    assert THRESHOLD - float(agent_rounds[0][1]) >= MIN_MARGIN
    assert "sent back: A step-by-step checker reviewed your answer. Step 2 of 4" in agent
    answer = find(r"^Agent's answer after (\d) feedback round \(passed (\w+), chain score "
                  r"(\d\.\d+)\):$", agent)
    assert answer.group(1, 2) == ("1", "True")
    assert float(answer.group(3)) - THRESHOLD >= MIN_MARGIN
    assert agent.rstrip().count("The answer is 6.") == 1
    assert_shipped_prm_note(out)


# -- DSPy ------------------------------------------------------------------------------------


def test_dspy_best_of_n_picks_the_correct_answer_by_the_prm_reward() -> None:
    pytest.importorskip("dspy")
    out = run_example("dspy/best_of_n.py")
    assert "DummyLM stands in for your LM" in out  # said plainly: a scripted LM
    candidates = re.findall(r"^([ *]) candidate (\d): reward (\d\.\d+) \(min over steps\)$",
                            out, re.MULTILINE)
    assert [(mark, n) for mark, n, _ in candidates] == [(" ", "1"), (" ", "2"), ("*", "3")]
    rewards = [float(r) for _, _, r in candidates]
    assert max(rewards[:2]) <= 0.05 + 1e-6  # both arithmetic slips caught by the check
    picked = find(r"^Picked candidate (\d): answer (\S+), reward (\d\.\d+), at or above the "
                  r"threshold (\d\.\d+)\.$", out)
    assert picked.group(1, 2) == ("3", "3")
    assert float(picked.group(3)) - float(picked.group(4)) >= MIN_MARGIN
    assert find(r"^Candidate 1 lost: step (\d) scores", out).group(1) == "1"
    assert find(r"^Candidate 2 lost: step (\d) scores", out).group(1) == "2"
    assert_shipped_prm_note(out)


# -- core ------------------------------------------------------------------------------------


def test_score_default_flags_the_slip_at_step_2_and_says_what_it_misses() -> None:
    out = run_example("score_default.py")
    assert "Steps are numbered from 1" in out
    flagged = dict(re.findall(r"^([\w ]+) solution: chain score \(min\) \d\.\d+, first step "
                              r"under 0\.3: (none|step \d)$", out, re.MULTILINE))
    assert flagged == {"correct": "none", "wrong quantity": "none",
                       "arithmetic slip": "step 2"}
    slip_block = out.split("arithmetic slip solution:", 1)[1]
    assert floats(find(r"^  step 2: .*$", slip_block).group(0))[0] <= 0.05 + 1e-6
    gap = float(find(r"solutions differ by (\d\.\d+)", out).group(1))
    caught = float(find(r"slip scores (\d\.\d+) below", out).group(1))
    assert gap < 0.05 and caught >= 0.3  # what the docstring says, with room to spare
    correct_min = float(find(r"^correct solution: chain score \(min\) (\d\.\d+)", out).group(1))
    assert correct_min - THRESHOLD >= MIN_MARGIN



def _spent(line: str) -> tuple[int, int, int, str, int]:
    m = find(r"^  spent: (\d+) tokens, (\d+) generator calls, (\d+) PRM calls; exhausted: "
             r"(\S+), overshoot: (\d+)$", line)
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4), int(m.group(5))


def test_search_under_budget_three_strategies_one_budget() -> None:
    out = run_example("search_under_budget.py")
    assert "A scripted step-level model stands in for your LLM" in out  # said plainly
    step_1 = find(r"^The shipped PRM on step 1: right (\d\.\d+), with the slip 3 \+ 4 = 8 "
                  r"(\d\.\d+)\.$", out)
    assert float(step_1.group(1)) - THRESHOLD >= MIN_MARGIN
    assert float(step_1.group(2)) <= 0.05 + 1e-6  # the slip is caught by the check
    limit = int(find(r"^Budget: generated_tokens=(\d+) \(8 whole solutions of (\d+) tokens\)",
                     out).group(1))
    pf, beam, ada, crowded = (out.split(head, 1)[1] for head in (
        "particle filtering (8 particles)", "beam search (", "adaptive best-of-N (",
        "particle filtering with 16 particles"))
    # each strategy: the right answer, within the one budget, ended on its own
    chosen = find(r"^: answer (\S+), weight (\d\.\d+); the best particle with another answer "
                  r"weighs (\d\.\d+)$", pf)
    assert chosen.group(1) == "18"
    assert float(chosen.group(2)) - float(chosen.group(3)) >= MIN_MARGIN
    slipped = find(r"per iteration: \[([\d, ]+)\]$", pf).group(1).split(", ")
    assert sum(map(int, slipped)) > 0  # the filter met slips and still answered 18
    beam_answer = find(r"^4 beams x 2 proposals\): answer (\S+); finished chains \(value\): "
                       r"(.*)$", beam)
    values = dict(re.findall(r"(\d+) \((\d\.\d+)\)", beam_answer.group(2)))
    assert beam_answer.group(1) == "18" and len(values) >= 2
    assert float(values.pop("18")) - max(map(float, values.values())) >= MIN_MARGIN
    decided = find(r"^at most 8, rounds of 2\): answer (\S+), (\d) of 8 samples drawn, (\d) "
                   r"saved \(stopped by: (\w+)\)$", ada)
    assert decided.groups() == ("18", "6", "2", "decided")
    rule = find(r"^  PRM-weighted votes \{(.*)\}: the leader is ahead by (\d\.\d+) with (\d) "
                r"samples left", ada)
    votes = sorted((float(w) for w in re.findall(r": (\d+\.\d+)", rule.group(1))), reverse=True)
    margin, left = float(rule.group(2)), int(rule.group(3))
    assert votes[0] - (votes[1] if len(votes) > 1 else 0.0) == pytest.approx(margin, abs=2e-3)
    assert margin - left >= MIN_MARGIN  # the exact rule, with room to spare
    for section in (pf, beam, ada):
        tokens, calls, prm_calls, exhausted, overshoot = _spent(section)
        assert tokens <= limit and exhausted == "none" and overshoot == 0
        assert calls > 0 and prm_calls > 0
    assert _spent(pf)[0] == limit  # 8 particles x 4 steps: the whole budget
    assert _spent(ada)[:3] == (6 * limit // 8, 6, 6)  # one call and one chain per sample
    # too many particles: the budget runs out after a whole iteration, before any finishes
    ran_out = find(r"^, same budget: stopped after iteration (\d) by (\w+), overshoot (\d+) "
                   r"tokens \(that iteration generated (\d+)\); particles finished: (\d+) of 16\.$",
                   crowded)
    assert ran_out.group(2) == "generated_tokens" and ran_out.group(5) == "0"
    assert 0 < int(ran_out.group(3)) <= int(ran_out.group(4))
    assert_shipped_prm_note(out)

@pytest.mark.slow
def test_ray_serve_example_serves_the_same_scores_and_picks_the_right_answer() -> None:
    pytest.importorskip("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run_example("ray_serve_prm.py", "--port", str(port), timeout=600)
    assert float(find(r"^max \|served - local\|: (\S+)$", out).group(1)) < 1e-4
    assert find(r"^verify\(wrong chain\): (\w+) - Step 2 of 3 looks wrong", out).group(1) == \
        "False"
    picked = find(r"^best_of_n picked: (.*) \(selection (\S+), ahead by (\d\.\d+)\)$", out)
    assert picked.group(1) == "The answer is 18." and picked.group(2) == "weighted_vote"
    assert float(picked.group(3)) >= 0.2


@pytest.mark.slow
def test_rl_grpo_example_runs_the_data_path_to_updates() -> None:
    pytest.importorskip("torch")
    out = run_example("rl_grpo_rewards.py", "--iterations", "2", timeout=600)
    iterations = re.findall(r"^iteration (\d+): mean reward (\d\.\d+)  loss ([-+]\d\.\d+)", out,
                            re.MULTILINE)
    assert len(iterations) == 2
    rewards = [float(r) for line in re.findall(r"rewards \[([^\]]+)\]", out)
               for r in line.split(", ")]
    assert len(rewards) == 2 * 4 * 4  # iterations x questions x group size
    assert all(0.0 <= r <= 2.0 for r in rewards)  # min over steps (+ 1.0 when right)
    assert re.search(r"^  step 1 .*: PRM \d\.\d+", out, re.MULTILINE)  # numbered from 1
    assert "done in" in out
