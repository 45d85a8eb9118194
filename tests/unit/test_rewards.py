"""Dense RL rewards: step spans, shaping formulas, token placement, batching, TRL signature.

The PRM is a real :class:`OnnxPRM` over the hand-built contract graph of
``tests/support/graph_models.py`` (real ONNX Runtime, outputs checked by hand in test_runtime.py);
the policy tokenizers are built here with ``tokenizers`` so every offset is known by hand.
"""

from __future__ import annotations

import doctest
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prm_plugins.rewards as rewards_module
from prm_plugins import InvalidInputError, load_prm, split_steps
from prm_plugins.adapters.trl import PRMRewardFunction, completion_text, prompt_question
from prm_plugins.rewards import (
    StepReward,
    StepRewards,
    check_answer,
    decode_with_offsets,
    place_step_rewards,
    shape_rewards,
    step_rewards,
    step_rewards_batch,
    step_spans,
    token_offsets,
    token_rewards,
)
from prm_plugins.runtime import OnnxPRM
from prm_plugins.steps import split_step_spans

from support.graph_models import make_model_dir

Q = "w1 w2 + w3 = ?"
COMPLETION = "w5 w6 = 7\nw7 + 8 = w9\n\nw10 ."


@pytest.fixture(scope="module")
def prm(tmp_path_factory: pytest.TempPathFactory) -> OnnxPRM:
    model_dir = make_model_dir(tmp_path_factory.mktemp("rewards") / "m", max_length=64)
    return load_prm(model_dir, device="cpu", token_budget=48, max_batch_size=4)


class CountingPRM:
    """Counts ``score_batch`` calls and passes them to a real OnnxPRM.

    A counter around the real scorer (not a fake) so the test checks both that a batch
    goes out in one call and that the scores that come back are the model's own.
    """

    def __init__(self, inner: OnnxPRM) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def score(self, question: str, steps: list[str]) -> Any:
        return self.score_batch([(question, steps)])[0]

    def score_batch(self, items: Any) -> Any:
        self.calls.append(len(items))
        return self.inner.score_batch(items)

    async def ascore(self, question: str, steps: list[str]) -> Any:  # pragma: no cover
        return self.score(question, steps)


def space_tokenizer(vocab: list[str] | None = None) -> Any:
    """WordLevel tokenizer that splits on spaces only, so newlines stay inside tokens."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    words = {w: i for i, w in enumerate(["[UNK]", *(vocab or [])])}
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r" +"), behavior="isolated")
    return tok


def byte_tokenizer() -> Any:
    """Byte-level BPE without merges: one token per UTF-8 byte (like GPT-2 on rare text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def test_docstring_examples_run() -> None:
    result = doctest.testmod(rewards_module)
    assert result.attempted >= 8 and result.failed == 0


# --------------------------------------------------------------------------- step spans

TEXT_ALPHABET = st.sampled_from(["a", "b", " ", "\n", "\n\n", "\t", "Step 1:", "Step 2.",
                                 "```", "~~~", "é", "€", ";;", "\r\n", "#", "**"])


@settings(max_examples=120, deadline=None)
@given(st.lists(TEXT_ALPHABET, max_size=30).map("".join),
       st.sampled_from(["auto", "newlines", "blank_lines", "step_markers"]))
def test_split_step_spans_agree_with_split_steps(text: str, mode: str) -> None:
    spans = split_step_spans(text, mode)
    assert [text[s:e] for s, e in spans] == split_steps(text, mode)
    assert all(s < e for s, e in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_split_step_spans_hand_cases() -> None:
    text = "  Add 2.\n\n\tSo 5 \u20ac.\n"
    assert split_step_spans(text, "blank_lines") == [(2, 8), (11, 18)]
    assert split_step_spans("one ;; two", "regex", pattern=r"\s*;;\s*") == [(0, 3), (7, 10)]
    assert split_step_spans("   \n ") == []
    fenced = "a\n```\nb\n\nc\n```\nd"
    assert [fenced[s:e] for s, e in split_step_spans(fenced, "newlines")] == [
        "a", "```\nb\n\nc\n```", "d"]


def test_step_spans_with_a_callable_splitter_and_its_errors() -> None:
    assert step_spans("x ;; y ;; x", lambda t: t.split(";;")) == [(0, 1), (5, 6), (10, 11)]
    with pytest.raises(InvalidInputError, match="does not occur in the completion"):
        step_spans("a b", lambda t: ["A", "B"])
    with pytest.raises(InvalidInputError, match="unknown splitter 'regex'"):
        step_spans("a", "regex")
    with pytest.raises(InvalidInputError, match="completion must be a str"):
        step_spans(b"a", "auto")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- scoring


def test_step_rewards_spans_texts_and_model_scores(prm: OnnxPRM) -> None:
    sr = step_rewards(Q, COMPLETION, prm)
    steps = ["w5 w6 = 7\nw7 + 8 = w9", "w10 ."]  # "auto" takes the blank line
    assert sr.texts == steps
    assert sr.spans == [(0, 21), (23, 28)]
    assert [COMPLETION[s:e] for s, e in sr.spans] == steps
    np.testing.assert_allclose(sr.scores, prm.score(Q, steps).scores, atol=1e-6)
    nl = step_rewards(Q, COMPLETION, prm, splitter="newlines")
    assert nl.spans == [(0, 9), (10, 21), (23, 28)]


class CountingSession:
    """Counts ONNX Runtime forward passes of the scorer's session (passes them through)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batch_sizes: list[int] = []

    def run(self, names: Any, feeds: dict[str, Any]) -> Any:
        self.batch_sizes.append(int(feeds["input_ids"].shape[0]))
        return self.inner.run(names, feeds)


def test_whole_batch_goes_out_in_one_score_batch_call(
    prm: OnnxPRM, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = CountingSession(prm._session)
    monkeypatch.setattr(prm, "_session", session)
    counting = CountingPRM(prm)
    items = [(Q, f"w{i} w{i + 1} = {i % 10}\nw{i + 2} .") for i in range(30)]
    items[7] = (Q, "  \n ")  # blank: no steps, not sent
    results = step_rewards_batch(items, counting)
    forward_batches = list(session.batch_sizes)
    assert counting.calls == [29]
    # Inside that one call the scorer packed the 29 chains into token-budget batches (48
    # padded tokens, at most 4 chains each), not one forward pass per chain.
    assert sum(forward_batches) == 29 and max(forward_batches) > 1
    assert len(results) == 30 and len(results[7]) == 0 and results[7].completion == "  \n "
    for (q, c), r in zip(items, results, strict=True):
        if r.steps:
            np.testing.assert_allclose(r.scores, prm.score(q, split_steps(c)).scores, atol=1e-6)
    counting.calls.clear()
    assert [len(r) for r in step_rewards_batch([(Q, " "), (Q, "")], counting)] == [0, 0]
    assert counting.calls == []


def test_step_rewards_batch_bad_items(prm: OnnxPRM) -> None:
    with pytest.raises(InvalidInputError, match=r"items\[1\] must be a \(question, completion\)"):
        step_rewards_batch([(Q, "w1"), "w2"], prm)  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r"items\[0\]: question must be a str"):
        step_rewards_batch([(1, "w1")], prm)  # type: ignore[list-item]


# --------------------------------------------------------------------------- shaping

P = [0.9, 0.6, 0.8, 0.3, 0.7]


def test_raw_and_centered() -> None:
    assert shape_rewards(P, "raw") == P
    np.testing.assert_allclose(shape_rewards(P, "centered"), [0.4, 0.1, 0.3, -0.2, 0.2])
    np.testing.assert_allclose(shape_rewards(P, "centered", baseline=0.0), P)


def test_delta_is_difference_to_previous_step_and_baseline_for_the_first() -> None:
    np.testing.assert_allclose(shape_rewards(P, "delta"), [0.4, -0.3, 0.2, -0.5, 0.4])
    np.testing.assert_allclose(shape_rewards(P, "delta", baseline=0.2), [0.7, -0.3, 0.2, -0.5, 0.4])
    assert math.isclose(sum(shape_rewards(P, "delta")), P[-1] - 0.5)


def test_min_form_returns_are_the_suffix_minimum() -> None:
    r = shape_rewards(P, "min")
    # suffix minima m = [0.3, 0.3, 0.3, 0.3, 0.7]; r_k = m_k - m_(k+1), m_6 = 0
    np.testing.assert_allclose(r, [0.0, 0.0, 0.0, -0.4, 0.7], atol=1e-12)
    returns = [sum(r[k:]) for k in range(len(P))]
    np.testing.assert_allclose(returns, [min(P[k:]) for k in range(len(P))], atol=1e-12)
    assert math.isclose(returns[0], min(P))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), max_size=12))
def test_min_form_property(scores: list[float]) -> None:
    r = shape_rewards(scores, "min")
    for k in range(len(scores)):
        assert math.isclose(sum(r[k:]), min(scores[k:]), abs_tol=1e-9)


def test_shaping_errors() -> None:
    with pytest.raises(InvalidInputError, match="unknown shaping 'sum'.*'raw', 'centered'"):
        shape_rewards(P, "sum")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"scores\[1\] must be a finite number"):
        shape_rewards([0.5, float("nan")])
    with pytest.raises(InvalidInputError, match="baseline must be a finite number"):
        shape_rewards(P, "centered", baseline="0.5")  # type: ignore[arg-type]
    assert shape_rewards([], "min") == []


# --------------------------------------------------------------------------- placement


def test_place_on_last_overlapping_token_hand_case() -> None:
    # text: "ab cd\n\nef g"  steps "ab cd" [0,5) and "ef g" [7,11)
    offsets = [(0, 2), (2, 4), (4, 5), (5, 7), (7, 9), (9, 11), (11, 11)]
    #          "ab"    " c"    "d"     "\n\n"  "ef"    " g"    eos (empty)
    out = place_step_rewards([(0, 5), (7, 11)], [0.5, -0.25], offsets)
    assert out.tolist() == [0.0, 0.0, 0.5, 0.0, 0.0, -0.25, 0.0]
    assert out.dtype == np.float32


def test_step_ending_inside_a_token_and_two_steps_on_one_token() -> None:
    # "x.\ny z": one token "x.\ny" runs across the step boundary.
    offsets = [(0, 4), (4, 5), (5, 6)]
    assert place_step_rewards([(0, 2), (3, 6)], [1.0, 2.0], offsets).tolist() == [1.0, 0.0, 2.0]
    # both steps end inside token 0: their rewards add up there
    assert place_step_rewards([(0, 2), (3, 4)], [1.0, 2.0], offsets).tolist() == [3.0, 0.0, 0.0]


def test_uncovered_step_goes_to_last_token_before_its_end() -> None:
    offsets = [(0, 2), (6, 8)]  # characters 2..5 were dropped by the tokenizer
    assert place_step_rewards([(3, 5), (6, 8)], [1.0, 2.0], offsets).tolist() == [1.0, 2.0]
    with pytest.raises(InvalidInputError, match="no tokens"):
        place_step_rewards([(0, 1)], [1.0], [])
    with pytest.raises(InvalidInputError, match="2 spans and 1 values"):
        place_step_rewards([(0, 1), (2, 3)], [1.0], [(0, 3)])


def test_token_rewards_with_a_tokenizer_whose_tokens_cross_step_boundaries() -> None:
    completion = "w1 w2.\nw3 w4\n\nw5"
    tok = space_tokenizer()
    ids, offsets = token_offsets(tok, completion)
    # tokens: "w1" " " "w2.\nw3" " " "w4\n\nw5"
    assert offsets == [(0, 2), (2, 3), (3, 9), (9, 10), (10, 16)]
    sr = StepRewards("q", completion, (StepReward("w1 w2.", 0, 6, 0.9),
                                       StepReward("w3 w4", 7, 12, 0.2),
                                       StepReward("w5", 14, 16, 0.6)))
    raw = token_rewards(sr, tok)
    np.testing.assert_allclose(raw, [0, 0, 0.9, 0, 0.8], atol=1e-6)  # steps 2 and 3 share
    centered = token_rewards(sr, tok, shaping="centered")
    np.testing.assert_allclose(centered, [0, 0, 0.4, 0, -0.3 + 0.1], atol=1e-6)


def test_unicode_steps_on_byte_tokens() -> None:
    # One token per UTF-8 byte: "€" is 3 tokens, "é" 2; the reward goes on the last byte.
    completion = "3 \u00d7 4 = 12 \u20ac\n\u00e9t\u00e9 = 12 \u2713"
    sr = StepRewards("q", completion, tuple(
        StepReward(completion[s:e], s, e, p)
        for (s, e), p in zip(split_step_spans(completion, "newlines"), [0.8, 0.4], strict=True)
    ))
    tok = byte_tokenizer()
    out = token_rewards(sr, tok, shaping="delta")
    n_bytes = len(completion.encode())
    assert out.shape == (n_bytes,)
    first_end = len("3 \u00d7 4 = 12 \u20ac".encode()) - 1  # last byte of "€"
    expected = np.zeros(n_bytes, dtype=np.float32)
    expected[first_end] = 0.8 - 0.5
    expected[n_bytes - 1] = 0.4 - 0.8  # last byte of "✓"
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # the same placement from the ids themselves (decode_with_offsets)
    ids, _ = token_offsets(tok, completion)
    text, offsets = decode_with_offsets(tok, ids)
    assert text == completion and len(offsets) == len(ids)
    assert offsets[first_end - 2 : first_end + 1] == [(11, 11), (11, 11), (11, 12)]
    np.testing.assert_allclose(token_rewards(sr, offsets=offsets, shaping="delta"), expected,
                               atol=1e-6)


def test_decode_with_offsets_streaming_equals_prefix_decoding() -> None:
    # Reference: token i spans what decoding ids[:i+1] adds to ids[:i] (U+FFFD = not yet).
    tok = byte_tokenizer()
    text = "\u03a3 2\u00d73 = 6 \u20ac\n\u65e5\u672c \u2713 ok"
    ids = tok.encode(text, add_special_tokens=False).ids
    decoded, offsets = decode_with_offsets(tok, ids)
    reference, done = [], 0
    for i in range(len(ids)):
        prefix = tok.decode(ids[: i + 1]).rstrip("\ufffd")
        reference.append((done, len(prefix)))
        done = len(prefix)
    assert decoded == text and offsets == reference
    assert sum(e > s for s, e in offsets) == len(text)  # one token completes each character


def test_transformers_fast_tokenizer_gives_the_same_rewards() -> None:
    transformers = pytest.importorskip("transformers")
    completion = "w1 w2.\nw3 w4\n\nw5"
    base = space_tokenizer()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=base, unk_token="[UNK]")
    sr = StepRewards("q", completion, (StepReward("w1 w2.", 0, 6, 0.9),
                                       StepReward("w3 w4\n\nw5", 7, 16, 0.2)))
    np.testing.assert_array_equal(token_rewards(sr, fast, shaping="min"),
                                  token_rewards(sr, base, shaping="min"))
    assert token_rewards(sr, fast, shaping="min").tolist() == pytest.approx(
        [0, 0, 0.0, 0, 0.2])


def test_outcome_reward_on_the_last_token() -> None:
    completion = "w1 = 3\nThe answer is 7"
    tok = space_tokenizer()
    sr = StepRewards("q", completion, (StepReward("w1 = 3", 0, 6, 0.5),
                                       StepReward("The answer is 7", 7, 22, 0.75)))
    base = token_rewards(sr, tok)
    right = token_rewards(sr, tok, gold_answer="#### 7", outcome_weight=2.0)
    wrong = token_rewards(sr, tok, gold_answer="8")
    np.testing.assert_allclose(right - base, [0] * (len(base) - 1) + [2.0])
    np.testing.assert_allclose(wrong, base)
    custom = token_rewards(sr, tok, gold_answer="x", answer_checker=lambda c, g: -0.5)
    assert custom[-1] == pytest.approx(0.75 - 0.5)
    assert check_answer("so 1,000 in all", "1000.00") and not check_answer("so 3", "4")


def test_token_rewards_errors() -> None:
    sr = StepRewards("q", "w1 w2", (StepReward("w1 w2", 0, 5, 0.5),))
    tok = space_tokenizer()

    class SlowTokenizer:
        is_fast = False

    with pytest.raises(InvalidInputError, match="slow .*no token offsets"):
        token_rewards(sr, SlowTokenizer())
    with pytest.raises(InvalidInputError, match="must be a tokenizers.Tokenizer or a transformers"):
        token_rewards(sr, object())
    with pytest.raises(InvalidInputError, match="exactly one of tokenizer= .* and offsets="):
        token_rewards(sr)
    with pytest.raises(InvalidInputError, match="exactly one of tokenizer="):
        token_rewards(sr, tok, offsets=[(0, 5)])
    with pytest.raises(InvalidInputError, match=r"offsets\[1\] = \(3, 9\) does not fit .* 5 char"):
        token_rewards(sr, offsets=[(0, 2), (3, 9)])
    with pytest.raises(InvalidInputError, match="unknown shaping 'clip'"):
        token_rewards(sr, tok, shaping="clip")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="answer_checker was given without gold_answer"):
        token_rewards(sr, tok, answer_checker=lambda c, g: True)
    with pytest.raises(InvalidInputError, match="must be a StepRewards"):
        token_rewards([0.5], tok)  # type: ignore[arg-type]
    assert token_rewards(StepRewards("q", "", ()), offsets=[]).tolist() == []


# --------------------------------------------------------------------------- TRL


def trl_call(func: Any, prompts: list[Any], completions: list[Any], **columns: Any) -> Any:
    """Call ``func`` exactly as TRL 1.16's ``GRPOTrainer._calculate_rewards`` does.

    TRL could not be exercised end to end in this test (a GRPOTrainer needs a model and a
    dataset); the call below copies its documented convention: keyword arguments
    ``prompts``, ``completions``, ``completion_ids``, the dataset's other columns, and
    ``trainer_state``, ``log_extra``, ``log_metric``.
    """
    logged: list[Any] = []
    return func(prompts=prompts, completions=completions,
                completion_ids=[[1, 2, 3] for _ in completions], **columns,
                trainer_state=object(), log_extra=lambda *a: logged.append(a),
                log_metric=lambda *a: logged.append(a))


@pytest.mark.parametrize("aggregate", ["min", "prod", "mean", "last"])
def test_trl_reward_function_plain_text(prm: OnnxPRM, aggregate: str) -> None:
    reward = PRMRewardFunction(prm, aggregate=aggregate)
    assert reward.__name__ == "prm_reward"
    completions = [COMPLETION, "w3 w4 = 1", "   "]
    out = trl_call(reward, [Q] * 3, completions, answer=["1", "2", "3"])
    assert isinstance(out, list) and len(out) == 3 and all(isinstance(x, float) for x in out)
    for c, value in zip(completions[:2], out[:2], strict=True):
        assert value == pytest.approx(prm.score(Q, split_steps(c)).aggregate(aggregate), abs=1e-6)
    assert out[2] == 0.0


def test_trl_reward_function_conversational_format(prm: OnnxPRM) -> None:
    reward = PRMRewardFunction(prm, name="prm_min")
    prompts = [[{"role": "system", "content": "Solve it."}, {"role": "user", "content": Q}]] * 2
    completions = [[{"role": "assistant", "content": COMPLETION}],
                   [{"role": "assistant", "content": [{"type": "text", "text": "w9 = 2"}]}]]
    out = trl_call(reward, prompts, completions)
    assert out == pytest.approx([prm.score(Q, split_steps(COMPLETION)).min,
                                 prm.score(Q, ["w9 = 2"]).min], abs=1e-6)
    assert reward.__name__ == "prm_min"
    assert prompt_question(prompts[0]) == Q and completion_text(completions[1]) == "w9 = 2"


def test_trl_reward_function_columns_outcome_and_one_batch_call(prm: OnnxPRM) -> None:
    counting = CountingPRM(prm)
    reward = PRMRewardFunction(counting, question_column="question", answer_column="answer",
                               outcome_weight=0.5, empty_reward=None)
    completions = ["w1 = 7\nthe answer is 7", "w1 = 8\nthe answer is 8", ""]
    out = trl_call(reward, ["<chat template> " + Q] * 3, completions,
                   question=[Q] * 3, answer=["#### 7"] * 3)
    assert counting.calls == [2]
    assert out[0] == pytest.approx(prm.score(Q, split_steps(completions[0])).min + 0.5, abs=1e-6)
    assert out[1] == pytest.approx(prm.score(Q, split_steps(completions[1])).min, abs=1e-6)
    assert out[2] is None


def test_trl_reward_function_errors(prm: OnnxPRM) -> None:
    reward = PRMRewardFunction(prm, answer_column="answer")
    with pytest.raises(InvalidInputError, match="got 2 prompts but 1 completions"):
        reward(prompts=[Q, Q], completions=["w1"])
    with pytest.raises(InvalidInputError, match="column 'answer' was not passed.*\\['solution'\\]"):
        trl_call(reward, [Q], ["w1"], solution=["1"])
    with pytest.raises(InvalidInputError, match="one entry per completion"):
        trl_call(reward, [Q, Q], ["w1", "w2"], answer=["1"])
    with pytest.raises(InvalidInputError, match="no user message"):
        trl_call(reward, [[{"role": "system", "content": "x"}]], ["w1"], answer=["1"])
    with pytest.raises(InvalidInputError, match="unknown aggregate 'max'"):
        PRMRewardFunction(prm, aggregate="max")
    with pytest.raises(InvalidInputError, match="needs answer_column"):
        PRMRewardFunction(prm, answer_checker=lambda c, g: True)
    with pytest.raises(InvalidInputError, match="scorer with score_batch"):
        PRMRewardFunction(object())  # type: ignore[arg-type]


def test_trl_token_reward_tensor_matches_core(prm: OnnxPRM) -> None:
    torch = pytest.importorskip("torch")
    tok = byte_tokenizer()
    texts = ["w5 w6 = 7\nw7 \u20ac", "w1 ."]
    ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    reward = PRMRewardFunction(prm, answer_column="answer")
    golds = ["7", "2"]  # "w7" ends with 7: right; "w1 ." ends with 1: wrong
    tensor = reward.token_rewards([Q, Q], ids, tok, shaping="min", answer=golds)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    assert tuple(tensor.shape) == (2, max(len(i) for i in ids))
    for row, (text, row_ids) in enumerate(zip(texts, ids, strict=True)):
        sr = step_rewards(Q, text, prm)
        expected = token_rewards(sr, tok, shaping="min", gold_answer=golds[row])
        np.testing.assert_allclose(tensor[row, : len(row_ids)].numpy(), expected, atol=1e-6)
        assert not tensor[row, len(row_ids):].any()
    # min shaping: a completion's rewards sum to its min step score, plus the outcome (1 or 0)
    assert float(tensor[0].sum()) == pytest.approx(min(step_rewards(Q, texts[0], prm).scores)
                                                   + 1.0, abs=1e-5)
    assert float(tensor[1].sum()) == pytest.approx(step_rewards(Q, texts[1], prm).scores[0],
                                                   abs=1e-6)



@pytest.mark.slow
def test_real_grpo_trainer_step_calls_the_reward_function(prm: OnnxPRM, tmp_path: Path) -> None:
    """One real ``trl.GRPOTrainer`` step (tiny random Llama, CPU) with the reward function.

    Slow (about 10 s) and only where TRL is installed; the fast tests above use TRL's
    documented call convention instead.
    """
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from transformers import LlamaConfig, LlamaForCausalLM

    from support.tiny_models import math_corpus, train_byte_bpe_tokenizer

    tok = train_byte_bpe_tokenizer(math_corpus(100), vocab_size=300, pad_token="<pad>")
    tok.padding_side = "left"
    policy = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id))
    seen: list[dict[str, Any]] = []

    class Spy(PRMRewardFunction):
        def __call__(self, *args: Any, **kwargs: Any) -> list[float | None]:
            assert args == ()  # TRL passes everything by keyword
            seen.append(kwargs)
            return super().__call__(**kwargs)

    reward = Spy(prm, answer_column="answer", name="prm_min")
    data = datasets.Dataset.from_list([{"prompt": Q, "answer": "7"}] * 4)
    config = trl.GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4,
                            num_generations=4, max_completion_length=8, max_steps=1,
                            report_to=[], save_strategy="no", logging_steps=1)
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=[reward], args=config,
                              train_dataset=data, processing_class=tok)
    trainer.train()
    assert len(seen) == 1 and {"prompts", "completions", "completion_ids", "answer"} <= set(seen[0])
    logged = [h for h in trainer.state.log_history if "rewards/prm_min/mean" in h]
    assert logged and 0.0 <= logged[0]["rewards/prm_min/mean"] <= 2.0
