"""An output parser that verifies an LLM answer with a PRM."""

from __future__ import annotations

from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.output_parsers import BaseOutputParser
from langchain_core.prompt_values import ChatPromptValue, PromptValue
from pydantic import ConfigDict

from prm_plugins.adapters.langchain.generators import question_from_messages
from prm_plugins.errors import InvalidInputError
from prm_plugins.strategies import Verdict, averify, verify
from prm_plugins.validation import check_aggregate, check_scorer, check_split, check_threshold

__all__ = ["PRMOutputParser"]


class PRMOutputParser(BaseOutputParser[Verdict]):
    """Split an LLM answer into steps, score them, and return the core :class:`Verdict`.

    With ``raise_on_fail=True`` a failing answer raises ``OutputParserException`` whose
    message and ``observation`` are the verifier's feedback (naming the weak step), with
    ``llm_output`` the answer and ``send_to_llm=True``; the exception also carries
    ``.verdict``. So ``(prompt | llm | parser).with_retry(...)``, ``.with_fallbacks(...)``
    and LangChain's retry parsers act on a failed verification like on any parse error.
    An answer without steps raises ``OutputParserException`` too, whatever
    ``raise_on_fail``.

    ``parse(text)`` scores against the ``question`` field; ``parse_with_prompt(text,
    prompt)`` takes the question from the prompt (its last human message).

    Examples:
        >>> parser = PRMOutputParser(prm=load_prm(), question="What is 2 + 3 * 4?",
        ...                          raise_on_fail=True)  # doctest: +SKIP
        >>> chain = (prompt | llm | parser).with_retry(
        ...     retry_if_exception_type=(OutputParserException,))  # doctest: +SKIP
        >>> chain.invoke({"question": "What is 2 + 3 * 4?"}).score  # doctest: +SKIP
        0.93
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    prm: Any
    """A :class:`~prm_plugins.StepScorer`."""
    threshold: float = 0.5
    """Pass mark in [0, 1]."""
    aggregate: Any = "min"
    """Chain score: ``"min"``, ``"prod"``, ``"mean"``, ``"last"``, ``"geomean"`` or a callable."""
    split: Any = "auto"
    """How the answer is cut into steps."""
    question: str = ""
    """The question answers are scored against by :meth:`parse`."""
    raise_on_fail: bool = False
    """Raise ``OutputParserException`` (with the feedback) when the answer fails."""

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        check_scorer(self.prm)
        check_threshold(self.threshold)
        check_aggregate(self.aggregate)
        check_split(self.split)

    @property
    def _type(self) -> str:
        return "prm_output_parser"

    def parse(self, text: str) -> Verdict:
        """Verify ``text`` against the ``question`` field."""
        return self._parse(self.question, text)

    async def aparse(self, text: str) -> Verdict:
        """Async :meth:`parse` (awaits the scorer's ``ascore``)."""
        return self._check(text, await self._averify(self.question, text))

    def parse_with_prompt(self, completion: str, prompt: PromptValue) -> Verdict:
        """Verify ``completion`` against the question in ``prompt`` (its last human message,
        or its whole text for a string prompt)."""
        question = None
        if isinstance(prompt, ChatPromptValue):
            question = question_from_messages(prompt.messages)
        return self._parse(question if question is not None else prompt.to_string(),
                           completion)

    def get_format_instructions(self) -> str:
        return ("Reason step by step: write each step on its own line, and end with "
                '"The answer is ...".')

    # -- internals ---------------------------------------------------------------------------
    def _parse(self, question: str, text: str) -> Verdict:
        try:
            verdict = verify(question, text, self.prm, self.threshold, self.aggregate,
                             self.split)
        except InvalidInputError as exc:
            raise self._no_steps(text, exc) from exc
        return self._check(text, verdict)

    async def _averify(self, question: str, text: str) -> Verdict:
        try:
            return await averify(question, text, self.prm, self.threshold, self.aggregate,
                                 self.split)
        except InvalidInputError as exc:
            raise self._no_steps(text, exc) from exc

    @staticmethod
    def _no_steps(text: str, exc: Exception) -> OutputParserException:
        return OutputParserException(
            f"PRMOutputParser could not verify the answer: {exc}",
            observation="The answer has no reasoning steps. Write the solution step by step.",
            llm_output=text, send_to_llm=True,
        )

    def _check(self, text: str, verdict: Verdict) -> Verdict:
        if self.raise_on_fail and not verdict.passed:
            exc = OutputParserException(
                f"The answer failed step verification (score {verdict.score:.2f} < "
                f"threshold {verdict.threshold:.2f}). {verdict.feedback}",
                observation=verdict.feedback, llm_output=text, send_to_llm=True,
            )
            exc.verdict = verdict  # type: ignore[attr-defined]
            raise exc
        return verdict
