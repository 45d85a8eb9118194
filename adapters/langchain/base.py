"""Base classes of the LangChain components in :mod:`prm_plugins.adapters.langchain.runnables`.

:class:`PRMRunnableBase` holds the fields and plumbing every component shares (the scorer,
``aggregate``, ``split``, the question key, option checks, events, the generator bound to
the call); :class:`SelectingRunnableBase` makes a component a drop-in for the generator it
wraps (its schemas, its output type, streaming the chosen output as one chunk).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
)
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from pydantic import BaseModel, ConfigDict

from prm_plugins.adapters.langchain.events import CANDIDATE_SELECTED_EVENT, EventDispatcher
from prm_plugins.adapters.langchain.generators import (
    RunnableGenerator,
    as_runnable,
    build_next_step_prompt,
    question_from_input,
)
from prm_plugins.errors import InvalidInputError
from prm_plugins.validation import (
    check_aggregate,
    check_scorer,
    check_split,
)

__all__ = ["DEFAULT_MAX_CONCURRENCY", "METADATA_KEY", "PRMRunnableBase", "SelectingRunnableBase"]

#: ``response_metadata`` key of the PRM's report on a message a selecting component returns.
METADATA_KEY = "prm"

#: Generator calls in flight per component call when neither the component nor the
#: call's config sets ``max_concurrency``.
DEFAULT_MAX_CONCURRENCY = 4


class PRMRunnableBase(RunnableSerializable[Any, Any]):
    """Shared fields and plumbing of the components (subclass it; not a component itself)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    prm: Any
    """A :class:`~prm_plugins.StepScorer`, e.g. ``prm_plugins.load_prm()``."""
    aggregate: Any = "min"
    """Chain score: ``"min"``, ``"prod"``, ``"mean"``, ``"last"``, ``"geomean"`` or a callable."""
    split: Any = "auto"
    """How answer text is cut into steps: a ``split_steps`` mode or a callable."""
    question_key: str = "question"
    """The key of the question in dict inputs."""

    def __init__(self, **data: Any) -> None:
        if "generator" in data:  # callables become runnables; anything else: a clear error
            data["generator"] = as_runnable(data["generator"], "generator")
        super().__init__(**data)
        # Validated here, outside pydantic, so that bad options raise the core's
        # InvalidInputError with its message instead of a wrapped ValidationError.
        check_scorer(self.prm)
        check_aggregate(self.aggregate)
        check_split(self.split)
        self._check_options()

    def _check_options(self) -> None:
        """Validate the strategy's own options (subclasses)."""

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return False

    # -- the Runnable interface ------------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config, run_type="chain", **kwargs)

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        return await self._acall_with_config(self._ainvoke, input, config, run_type="chain",
                                             **kwargs)

    def _invoke(
        self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        raise NotImplementedError

    async def _ainvoke(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------
    def _question(self, input: Any) -> str:
        question = question_from_input(input, self.question_key, who=self.get_name())
        if not question.strip():
            raise InvalidInputError(
                f"{self.get_name()}: the question is empty; received input {input!r:.80}"
            )
        return question

    @staticmethod
    def _dispatcher(config: RunnableConfig, *, use_async: bool) -> EventDispatcher:
        return EventDispatcher(config, asyncio.get_running_loop() if use_async else None)

    def _concurrency(self, config: RunnableConfig) -> int:
        own = getattr(self, "max_concurrency", None)
        if own is not None:
            return int(own)
        return int(config.get("max_concurrency") or DEFAULT_MAX_CONCURRENCY)

    def _generator(
        self, input: Any, question: str, config: RunnableConfig, max_concurrency: int = 1
    ) -> RunnableGenerator:
        generator: Runnable[Any, Any] = self.generator  # type: ignore[attr-defined]
        # The child config carries run_manager.get_child(): generator runs nest under ours.
        child: RunnableConfig = {**config, "max_concurrency": max_concurrency}
        return RunnableGenerator(
            generator, config=child, split=self.split,
            step_prompt=getattr(self, "step_prompt", build_next_step_prompt),
        ).bound_to(input, question, self.question_key)


def _json_ready(value: Any) -> Any:
    """``value`` as plain JSON types (``str`` subclasses become ``str``; NaN stays NaN)."""
    return json.loads(json.dumps(value, default=str))


def _chunk(output: Any) -> Any:
    """What ``stream`` yields for ``output``: an ``AIMessageChunk`` for an ``AIMessage``."""
    if isinstance(output, AIMessage) and not isinstance(output, BaseMessageChunk):
        return AIMessageChunk(
            content=output.content, additional_kwargs=output.additional_kwargs,
            response_metadata=output.response_metadata, id=output.id, name=output.name,
            usage_metadata=output.usage_metadata, tool_calls=output.tool_calls,
        )
    return output


class SelectingRunnableBase(PRMRunnableBase):
    """A drop-in for its generator: returns the generator's output type (see module docs).

    Subclasses build the core strategy (``_core``), run it (``_run`` / ``_arun``), say what
    the ``prm.candidate_selected`` event carries (``_selected``) and which generator output
    the choice came from (``_template``).
    """

    generator: Runnable[Any, Any]
    """What samples the answers: a chat model, an LLM or a chain such as ``prompt | llm``."""
    return_result: bool = False
    """Return the core result object instead of the generator's output type."""

    _result_type: ClassVar[type] = object

    # -- schemas: the generator's --------------------------------------------------------
    @property
    def InputType(self) -> Any:  # noqa: N802 (the Runnable interface's name)
        """The generator's input type."""
        return self.generator.InputType

    @property
    def OutputType(self) -> Any:  # noqa: N802
        """The generator's output type, or the core result type with ``return_result``."""
        return self._result_type if self.return_result else self.generator.OutputType

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """The generator's input schema."""
        return cast("type[BaseModel]", self.generator.get_input_schema(config))

    def get_output_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """The generator's output schema (the core result's with ``return_result``)."""
        if self.return_result:
            return cast("type[BaseModel]", super().get_output_schema(config))
        return cast("type[BaseModel]", self.generator.get_output_schema(config))

    # -- the strategy ----------------------------------------------------------------------
    def _core(self, generator: Any, prm: Any, max_concurrency: int) -> Any:
        raise NotImplementedError

    def _prepare(self, input: Any) -> tuple[Any, str, Any]:
        """(input for the generator, question, starting solution or ``None``)."""
        return input, self._question(input), None

    def _run(self, core: Any, question: str, solution: Any) -> Any:
        return core.run(question)

    async def _arun(self, core: Any, question: str, solution: Any) -> Any:
        return await core.arun(question)

    @staticmethod
    def _selected(result: Any) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def _template(result: Any) -> Any:
        """The generator output the chosen text came from (``None`` if unknown)."""
        return None

    @staticmethod
    def _text(result: Any) -> str:
        return str(result.text)

    def _output(self, result: Any, selected: dict[str, Any], generator: Any = None) -> Any:
        if self.return_result:
            return result
        text = str(self._text(result))
        template = self._template(result)
        if template is None:  # the chosen text is not one output (e.g. assembled steps)
            template = getattr(generator, "last_output", None)
        if template is None:  # no generation at all (a given answer was accepted)
            template = "" if self.generator.OutputType is str else AIMessage("")
        if not isinstance(template, BaseMessage):
            return text
        report = {**_json_ready(selected), "result": _json_ready(result.to_dict())}
        message: BaseMessage = template
        if message.text != text or isinstance(message, BaseMessageChunk):
            message = AIMessage(text, response_metadata=dict(template.response_metadata))
        return message.model_copy(update={
            "response_metadata": {**message.response_metadata, METADATA_KEY: report}})

    def _invoke(
        self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        input, question, solution = self._prepare(input)
        events = self._dispatcher(config, use_async=False)
        limit = self._concurrency(config)
        generator = self._generator(input, question, config, limit)
        core = self._core(generator, events.observe(self.prm, self.aggregate), limit)
        result = self._run(core, question, solution)
        selected = self._selected(result)
        events.send(CANDIDATE_SELECTED_EVENT, selected)
        return self._output(result, selected, generator)

    async def _ainvoke(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        input, question, solution = self._prepare(input)
        events = self._dispatcher(config, use_async=True)
        limit = self._concurrency(config)
        generator = self._generator(input, question, config, limit)
        core = self._core(generator, events.observe(self.prm, self.aggregate), limit)
        result = await self._arun(core, question, solution)
        selected = self._selected(result)
        await events.asend(CANDIDATE_SELECTED_EVENT, selected)
        return self._output(result, selected, generator)

    # -- streaming: the chosen output as one chunk ----------------------------------------
    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Sample and score, then yield the chosen output once (an ``AIMessageChunk``)."""
        yield _chunk(self.invoke(input, config, **kwargs))

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async :meth:`stream`."""
        yield _chunk(await self.ainvoke(input, config, **kwargs))
