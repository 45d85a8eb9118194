"""The shared vocabulary has one public home: errors, types, validation, plans, options."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Sequence

import pytest

import prm_plugins.errors as errors
from prm_plugins.errors import InvalidInputError, PRMError
from prm_plugins.plans import RetryPolicy
from prm_plugins.strategies import (
    DVTS,
    BestOfN,
    BestOfNOptions,
    SearchOptions,
    SelfCritique,
    SelfCritiqueOptions,
    StepBeamSearch,
)
from prm_plugins.types import Aggregate, Aggregation, Splitter, StepScorer, StepScores
from prm_plugins.validation import check_count, check_threshold

from support.paths import ROOT

SOURCES = [p for d in ("prm_plugins", "adapters", "onnx_export") for p in (ROOT / d).rglob("*.py")]


def _error_bases(node: ast.ClassDef) -> list[str]:
    return [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]


def test_every_public_error_class_is_defined_in_errors_py() -> None:
    outside = []
    for path in SOURCES:
        if path == ROOT / "prm_plugins" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.ClassDef) and not node.name.startswith("_")
                    and any(b.endswith(("Error", "Exception")) for b in _error_bases(node))):
                outside.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert outside == []


@pytest.mark.parametrize(("module", "name"), [
    ("prm_plugins.strategies", "AllCandidatesFailedError"),
    ("prm_plugins.strategies", "EmptyGenerationsError"),
    ("prm_plugins.strategies", "GeneratorTimeoutError"),
    ("prm_plugins.strategies", "TransientGeneratorError"),
    ("prm_plugins.plans", "AllCandidatesFailedError"),
    ("prm_plugins.microbatch", "ScorerOutputError"),
    ("prm_plugins.microbatch", "ScorerTimeoutError"),
    ("prm_plugins.microbatch", "MicroBatcherClosedError"),
    ("prm_plugins.microbatch", "MicroBatcherLoopError"),
    ("prm_plugins.jsonl", "JSONLineError"),
    ("prm_plugins.labeling.stepwise", "StepwiseFormatError"),
    ("prm_plugins.labeling.grader", "GraderAnswerError"),
    ("prm_plugins.adapters.ray.client", "RemotePRMError"),
    ("prm_plugins.adapters.ray", "RemotePRMError"),
    ("prm_plugins.adapters.llamaindex.llm", "AnswersTooLongError"),
    ("prm_plugins.adapters.langchain.middleware", "VerificationFailedError"),
])
def test_old_import_paths_of_errors_give_the_same_class(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert cls is getattr(errors, name)
    assert issubclass(cls, PRMError) and name in errors.__all__


def test_the_errors_keep_their_attributes_and_bases() -> None:
    exc = errors.AnswersTooLongError("too long", n_tokens=900, max_length=512,
                                     causes=[ValueError("x")])
    assert isinstance(exc, errors.AllCandidatesFailedError) and not isinstance(exc, ValueError)
    assert (exc.n_tokens, exc.max_length, len(exc.causes)) == (900, 512, 1)
    empty = errors.EmptyGenerationsError("none")
    assert isinstance(empty, InvalidInputError)
    assert isinstance(empty, errors.AllCandidatesFailedError)
    row_error = errors.StepwiseFormatError("bad row", line=3, path="a.jsonl")
    assert str(row_error) == "a.jsonl:3: bad row"
    assert isinstance(errors.GeneratorTimeoutError("slow"), TimeoutError)


def test_one_name_per_type_and_the_old_names_alias_them() -> None:
    from prm_plugins.rewards import RewardSplitter
    from prm_plugins.strategies.verify import Aggregate as VerifyAggregate

    assert Aggregate is Aggregation and VerifyAggregate is Aggregation
    assert RewardSplitter is Splitter


class _NoAsyncBatch:
    def score(self, question: str, steps: Sequence[str]) -> StepScores:
        return StepScores(list(steps), [0.5] * len(steps), question)

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        return [self.score(q, s) for q, s in items]

    async def ascore(self, question: str, steps: Sequence[str]) -> StepScores:
        return self.score(question, steps)


class _Full(_NoAsyncBatch):
    async def ascore_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        return self.score_batch(items)


def test_the_scorer_contract_includes_ascore_batch() -> None:
    assert isinstance(_Full(), StepScorer)
    assert not isinstance(_NoAsyncBatch(), StepScorer)


def test_options_validate_without_a_generator_or_a_scorer() -> None:
    opts = BestOfNOptions(n=8, threshold=1, aggregate="mean")
    assert (opts.n, opts.threshold, opts.aggregate) == (8, 1.0, "mean")
    assert isinstance(opts.threshold, float) and isinstance(opts.retry, RetryPolicy)
    with pytest.raises(InvalidInputError,
                       match=r"n must be an int >= 1 \(candidates to sample\), got 0"):
        BestOfNOptions(n=0)
    with pytest.raises(InvalidInputError, match="selection must be one of"):
        BestOfNOptions(selection="best")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="max_rounds must be an int >= 0, got -1"):
        SelfCritiqueOptions(max_rounds=-1)
    with pytest.raises(InvalidInputError, match=r"n \(6\) must be a multiple of beam_width \(4\)"):
        SearchOptions(n=6, beam_width=4)
    with pytest.raises(InvalidInputError, match="retry must be a RetryPolicy or None"):
        SearchOptions(retry=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [{"n": 0}, {"threshold": 2.0}, {"aggregate": "median"},
                                 {"split": "sentences"}, {"max_concurrency": True}])
def test_a_strategy_refuses_what_its_options_refuse_with_the_same_words(bad: dict) -> None:
    with pytest.raises(InvalidInputError) as from_options:
        BestOfNOptions(**bad)
    with pytest.raises(InvalidInputError) as from_strategy:
        BestOfN(object(), _Full(), **{"n": 4, **bad})
    assert str(from_options.value) == str(from_strategy.value)


def test_from_options_builds_the_strategy_the_options_describe() -> None:
    prm, gen = _Full(), object()
    bon = BestOfN.from_options(gen, prm, BestOfNOptions(n=3, threshold=0.7, split="newlines"))
    assert (bon.n, bon.threshold, bon.split) == (3, 0.7, "newlines")
    assert bon.generator is gen and bon.prm is prm
    critic = SelfCritique.from_options(gen, prm, SelfCritiqueOptions(max_rounds=0,
                                                                     redo_from="weakest"))
    assert (critic.max_rounds, critic.redo_from, critic.threshold) == (0, "weakest", 0.5)
    for cls in (StepBeamSearch, DVTS):
        search = cls.from_options(gen, prm, SearchOptions(n=4, beam_width=2))
        assert type(search) is cls and search.n_beams == 2


def test_check_count_and_check_threshold_refuse_bools() -> None:
    with pytest.raises(InvalidInputError, match="max_retries must be an int >= 0, got True"):
        check_count(True, "max_retries", minimum=0)
    assert check_count(None, "max_concurrency", optional=True) is None
    with pytest.raises(InvalidInputError, match="or None, got 0"):
        check_count(0, "max_concurrency", optional=True)
    with pytest.raises(InvalidInputError,
                       match=r"threshold must be a number in \[0, 1\], got True"):
        check_threshold(True)
    with pytest.raises(InvalidInputError, match="threshold must be a number"):
        StepScores(["a"], [0.4]).first_error(True)
