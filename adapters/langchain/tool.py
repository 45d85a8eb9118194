"""A ``BaseTool`` with which an agent checks its own reasoning steps."""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field

from prm_plugins.errors import InvalidInputError
from prm_plugins.strategies import Verdict, averify, verify
from prm_plugins.validation import check_aggregate, check_scorer, check_threshold

__all__ = ["PRMVerifyStepsTool", "VerifyStepsInput"]


class VerifyStepsInput(BaseModel):
    """Arguments of :class:`PRMVerifyStepsTool`."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(description="The problem being solved, as the user asked it.")
    steps: list[str] = Field(
        min_length=1,
        description="The reasoning steps so far, in order, one item per step.",
    )


class PRMVerifyStepsTool(BaseTool):
    """Lets an agent check its own reasoning steps with a process reward model.

    The tool returns the verifier's feedback as content (``"PASSED: ..."`` or
    ``"FAILED: ..."``; a failure names the weak step, quotes it and gives its score) and
    the core :class:`Verdict` as a JSON-ready dict artifact
    (``response_format="content_and_artifact"``). Unusable arguments (e.g. only blank
    steps) raise ``ToolException``, which an agent sees as the tool's answer when
    ``handle_tool_error=True``.

    Examples:
        >>> tool = PRMVerifyStepsTool(prm=load_prm(), threshold=0.5)  # doctest: +SKIP
        >>> tool.invoke({"question": "2 + 3 * 4 = ?",
        ...              "steps": ["3 * 4 = 12", "2 + 12 = 15"]})  # doctest: +SKIP
        'FAILED: Step 2 of 2 looks wrong: "2 + 12 = 15" scores 0.03, below the threshold ...'
        >>> agent = create_agent(llm, tools=[tool])  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "verify_steps"
    description: str = (
        "Check a step-by-step solution before giving the final answer. Pass the question "
        "and the reasoning steps (one item per step). Returns PASSED or FAILED with "
        "feedback naming the first step that looks wrong; if it failed, redo the solution "
        "from that step."
    )
    args_schema: type[BaseModel] = VerifyStepsInput
    response_format: str = "content_and_artifact"  # type: ignore[assignment]

    prm: Any
    """A :class:`~prm_plugins.StepScorer`."""
    threshold: float = 0.5
    """Pass mark in [0, 1]."""
    aggregate: Any = "min"
    """Chain score: ``"min"``, ``"prod"``, ``"mean"``, ``"last"``, ``"geomean"`` or a callable."""

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        check_scorer(self.prm)
        check_threshold(self.threshold)
        check_aggregate(self.aggregate)

    @staticmethod
    def _content(verdict: Verdict) -> tuple[str, dict[str, Any]]:
        status = "PASSED" if verdict.passed else "FAILED"
        return f"{status}: {verdict.feedback}", verdict.to_dict()

    def _run(self, question: str, steps: list[str], **_: Any) -> tuple[str, dict[str, Any]]:
        try:
            verdict = verify(question, steps, self.prm, self.threshold, self.aggregate)
        except InvalidInputError as exc:  # the agent's arguments: tell it, don't crash
            raise ToolException(f"verify_steps could not check these steps: {exc}") from exc
        return self._content(verdict)

    async def _arun(
        self, question: str, steps: list[str], **_: Any
    ) -> tuple[str, dict[str, Any]]:
        try:
            verdict = await averify(question, steps, self.prm, self.threshold, self.aggregate)
        except InvalidInputError as exc:
            raise ToolException(f"verify_steps could not check these steps: {exc}") from exc
        return self._content(verdict)
