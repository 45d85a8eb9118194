"""vLLM's Pooling API for process reward models: the wire protocol, client and server side.

Pure functions, no HTTP: :class:`~prm_plugins.backends.vllm.VLLMPRM` builds requests and
reads answers with them, and the project's Ray Serve deployment
(:mod:`prm_plugins.adapters.ray.serve`) answers ``POST /pooling`` with them, so a client does
not care which of the two servers it talks to.

What was followed (vLLM v0.18, docs at ``docs.vllm.ai/en/v0.18.0/models/pooling_models/``;
the source read in the ``vllm-project/vllm`` repository):

* Request, ``POST /pooling`` (``PoolingCompletionRequest``,
  ``vllm/entrypoints/pooling/pooling/protocol.py``; fields from the mixins in
  ``vllm/entrypoints/pooling/base/protocol.py``: ``PoolingBasicRequestMixin.model`` /
  ``truncate_prompt_tokens``, ``CompletionRequestMixin.input: list[int] | list[list[int]] |
  str | list[str]`` and ``add_special_tokens``, ``EncodingRequestMixin.encoding_format =
  "float"``, ``ClassifyRequestMixin.use_activation``)::

      {"model": "Qwen/Qwen2.5-Math-PRM-7B", "input": [[151644, ...], [151644, ...]],
       "task": "token_classify", "encoding_format": "float"}

  Token ids are sent (never text), so the server scores exactly the tokens the project's
  format rendered; ``truncate_prompt_tokens`` is never sent (no silent truncation).
* Response (``PoolingResponse`` / ``PoolingResponseData``, same file)::

      {"id": "pool-...", "object": "list", "created": 1700000000, "model": "...",
       "data": [{"index": 0, "object": "pooling", "data": [[p_neg, p_pos], ...]}, ...],
       "usage": {"prompt_tokens": 123, "total_tokens": 123, "completion_tokens": 0}}

  ``data[i].data`` holds one row per token (``ALL`` pooling) or one row per step tag
  (``STEP`` pooling with ``step_tag_id``): ``StepPool.forward`` in
  ``vllm/model_executor/layers/pooler/tokwise/methods.py`` keeps the columns
  ``returned_token_ids`` (when set) and then the rows whose token is ``step_tag_id``; the
  token classifier head (``TokenClassifierPoolerHead``, ``.../tokwise/heads.py``) applies
  the activation (softmax) to each row.
* Errors (``ErrorResponse`` / ``ErrorInfo``, ``vllm/entrypoints/openai/engine/protocol.py``):
  ``{"error": {"message", "type", "param", "code"}}``; releases before v0.11 answered the
  flat ``{"object": "error", "message", "type", "param", "code"}``. Both are read.
* Models (``docs/models/pooling_models/reward.md``): ``Qwen2ForProcessRewardModel``
  (Qwen2.5-Math-PRM) has STEP pooling with ``step_tag_id`` 151651 (``<extra_0>``) by default
  (``Qwen2ForProcessRewardModelConfig`` in ``vllm/model_executor/models/config.py``), two
  labels softmaxed, so each row is ``[P(wrong), P(right)]``: the caller inserts the
  ``<extra_0>`` tags (the ``qwen-prm`` format does). Math-Shepherd
  (``LlamaForCausalLM``) needs ``--pooler-config '{"pooling_type": "STEP", "step_tag_id":
  <id of "ки">, "returned_token_ids": [<id of "+">, <id of "-">]}'``, so each row is
  ``[P(+), P(-)]``: P(right) is column 0. :func:`correct_column` holds that convention.

Sources read (``vllm-project/vllm``, file @ commit, lines): ``pooling/pooling/protocol.py``
@ 01cfbaf6 (``PoolingCompletionRequest`` 24-50, ``PoolingResponseData`` 112-115,
``PoolingResponse`` 118-124); ``pooling/base/protocol.py`` @ 020638a6 (the mixins, by their
``--8<--`` doc markers); ``pooler/tokwise/methods.py`` @ 055e47c2 (``StepPool`` 104-140:
columns 130-131, rows 133-136); ``pooler/tokwise/heads.py`` @ 0217ce90
(``TokenClassifierPoolerHead.forward_chunk``); ``openai/engine/protocol.py`` @ 040a2cc2
(``ErrorInfo``, ``ErrorResponse``, ``UsageInfo``); ``docs/models/pooling_models/reward.md``
@ 063da229 and ``README.md`` @ 08eded4c; ``tests/models/language/pooling/test_reward.py`` @
089c137d (Qwen2.5-Math-PRM's rows equal the HF softmax at each ``<extra_0>``). The same
request and response fields are on the v0.18.0 documentation pages.

Examples:
    >>> pooling_request([[1, 2, 3]], model="m")["input"]
    [[1, 2, 3]]
    >>> read_step_values([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8]], [5, 6, 7], [1, 2],
    ...                  column=1, url="u", item=0)
    ([0.7, 0.8], 'all')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from prm_plugins.errors import RemoteRequestError, RemoteResponseError, RemoteServerError

__all__ = ["POOLING_MODES", "Pooling", "correct_column", "error_from_answer",
           "pooling_request", "read_items", "read_step_values", "token_rows"]

#: How the server pools: ``"all"`` (one row per token), ``"step"`` (one row per step tag),
#: or ``"auto"`` (told apart by the number of rows).
Pooling = Literal["auto", "all", "step"]
POOLING_MODES: tuple[str, ...] = ("auto", "all", "step")

#: Formats whose served rows put P(right) first: Math-Shepherd served with
#: ``returned_token_ids`` = [id("+"), id("-")].
_GOOD_FIRST = frozenset({"math-shepherd"})


def correct_column(format_name: str) -> int:
    """The column of a pooled row that holds P(this step is right), by PRM format.

    A two-label classifier (Qwen2.5-Math-PRM, TRL token classifiers) answers
    ``[P(wrong), P(right)]``: column 1. Math-Shepherd served with ``returned_token_ids``
    ``[id("+"), id("-")]`` answers ``[P(+), P(-)]``: column 0.

    Examples:
        >>> correct_column("qwen-prm"), correct_column("math-shepherd")
        (1, 0)
    """
    return 0 if format_name in _GOOD_FIRST else 1


def pooling_request(token_ids: Sequence[Sequence[int]], *, model: str | None,
                    task: str | None = "token_classify") -> dict[str, Any]:
    """The JSON body of one ``POST /pooling`` request for rendered chains.

    Args:
        token_ids: one token-id list per chain, as the format rendered it.
        model: the served model name (``None``: the server's only model).
        task: the pooling task (``"token_classify"``); ``None`` leaves it out, for
            servers older than the task field.
    """
    body: dict[str, Any] = {"input": [list(ids) for ids in token_ids],
                            "encoding_format": "float"}
    if model is not None:
        body["model"] = model
    if task is not None:
        body["task"] = task
    return body


def _message(body: Any) -> tuple[str, str]:
    """``(type, message)`` of an error answer, in the current or the older vLLM shape."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, str) and isinstance(body, dict):  # e.g. {"error": "...", "detail": ...}
        return "error", err
    if isinstance(err, dict):
        body = err
    if isinstance(body, dict) and "message" in body:
        return str(body.get("type", "error"))[:80], str(body["message"])[:2000]
    if isinstance(body, dict) and "detail" in body:  # FastAPI's HTTPException
        return "HTTPException", str(body["detail"])[:2000]
    return "error", str(body)[:500]


def error_from_answer(status: int, body: Any, url: str) -> RemoteRequestError | RemoteServerError:
    """The project error for a non-retried HTTP error answer, with the server's message.

    Examples:
        >>> e = error_from_answer(400, {"error": {"message": "too long", "type": "BadRequestError",
        ...                                       "param": None, "code": 400}}, "http://h/pooling")
        >>> type(e).__name__, e.status
        ('RemoteRequestError', 400)
    """
    kind, message = _message(body)
    text = f"the PRM server at {url} answered HTTP {status} ({kind}): {message}"
    if status < 500:
        hint = {404: "; check the URL (the server's /pooling route) and the model name",
                401: "; pass the server's key in headers={'Authorization': 'Bearer ...'}"}
        return RemoteRequestError(text + hint.get(status, ""), url=url, status=status)
    return RemoteServerError(text, url=url, status=status)


def read_items(body: Any, n_items: int, url: str) -> list[Any]:
    """Each input's ``data`` from a pooling answer, in input order.

    Raises:
        RemoteResponseError: the answer is not a pooling response for ``n_items`` inputs
            (not an object, no ``data`` list, the wrong number of entries, an ``index``
            missing, repeated or out of range).
    """
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise RemoteResponseError(
            f"the PRM server at {url} answered without a 'data' list, so not a pooling "
            f"response: {str(body)[:300]}", url=url)
    if len(data) != n_items:
        raise RemoteResponseError(
            f"the PRM server at {url} answered {len(data)} result(s) for {n_items} input(s)",
            url=url)
    out: list[Any] = [None] * n_items
    seen: set[int] = set()
    for k, entry in enumerate(data):
        index = entry.get("index", k) if isinstance(entry, dict) else None
        if (not isinstance(entry, dict) or isinstance(index, bool) or not isinstance(index, int)
                or not 0 <= index < n_items or index in seen or "data" not in entry):
            raise RemoteResponseError(
                f"the PRM server at {url} answered a malformed result {k} (each must be "
                f"{{'index': 0..{n_items - 1}, 'data': [...]}}, each index once): "
                f"{str(entry)[:200]}", url=url)
        seen.add(index)
        out[index] = entry["data"]
    return out


def _value(row: Any, column: int, where: str, url: str, item: int) -> float:
    """P(right) from one pooled row: ``row[column]``, or the row itself when it is a number."""
    value = row
    if isinstance(row, list):
        if len(row) <= column:
            raise RemoteResponseError(
                f"{where}: the row {str(row)[:80]} has {len(row)} column(s), but P(right) is "
                f"read from column {column}; serve a two-label PRM (or set correct_column)",
                url=url, item=item)
        value = row[column]
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not 0.0 <= value <= 1.0):
        raise RemoteResponseError(
            f"{where}: {str(value)[:40]} is not a probability in [0, 1] (did the server run "
            "with use_activation off, or is the model not a PRM?)", url=url, item=item)
    return float(value)


def _mode(n_rows: int, n_tokens: int, n_steps: int, pooling: str) -> str | None:
    if pooling != "auto":
        want = n_tokens if pooling == "all" else n_steps
        return pooling if n_rows == want else None
    if n_rows == n_tokens:
        return "all"
    return "step" if n_rows == n_steps else None


def read_step_values(rows: Any, input_ids: Sequence[int], positions: Sequence[int], *,
                     column: int, url: str, item: int, pooling: str = "auto",
                     label: str = "") -> tuple[list[float], str]:
    """One chain's step probabilities from its pooled rows, read as the ONNX path reads them.

    ``ALL`` pooling (one row per token): the value at each step position the format
    rendered. ``STEP`` pooling (one row per step tag): the rows in order, after checking
    that the chain's step tags are exactly the tokens the server selected (every step ends
    in the same token id, which appears nowhere else), so row k is step k.

    Args:
        rows: the input's ``data`` from the answer.
        input_ids: the token ids sent.
        positions: the format's score position of each step.
        column: the row column holding P(right) (:func:`correct_column`).
        url: the endpoint, for messages.
        item: the chain's index in the caller's batch, for messages.
        pooling: ``"auto"``, ``"all"`` or ``"step"`` (what the server is expected to do).
        label: words naming the chain in messages (e.g. its question's start).

    Returns:
        ``(one probability per step, the pooling found)``.

    Raises:
        RemoteResponseError: the wrong number of rows, a malformed row, a value that is not
            a probability, or STEP rows that cannot be mapped to steps exactly.
    """
    where = f"chain {item}{label} from {url}"
    if not isinstance(rows, list):
        raise RemoteResponseError(f"{where}: 'data' is {type(rows).__name__}, not a list of "
                                  "rows", url=url, item=item)
    mode = _mode(len(rows), len(input_ids), len(positions), pooling)
    if mode is None:
        expect = {"all": f"{len(input_ids)} (one per token)",
                  "step": f"{len(positions)} (one per step)"}
        wanted = (f"{expect['all']} or {expect['step']}" if pooling == "auto"
                  else expect[pooling])
        raise RemoteResponseError(
            f"{where}: the server answered {len(rows)} row(s) for {len(input_ids)} tokens and "
            f"{len(positions)} steps; expected {wanted}", url=url, item=item)
    if mode == "all":
        return [_value(rows[p], column, where, url, item) for p in positions], mode
    tags = {input_ids[p] for p in positions}
    occurrences = [i for i, t in enumerate(input_ids) if t in tags]
    if len(tags) != 1 or occurrences != list(positions):
        raise RemoteResponseError(
            f"{where}: the server pooled one row per step tag (STEP pooling), but in this "
            "chain the steps' score tokens are not exactly the occurrences of one token id, "
            "so rows cannot be matched to steps; serve the model with ALL pooling "
            "(--pooler-config '{\"pooling_type\": \"ALL\"}') and VLLMPRM(pooling='all')",
            url=url, item=item)
    return [_value(r, column, where, url, item) for r in rows], mode


def token_rows(probs: Sequence[float], column: int) -> list[list[float]]:
    """Per-token rows for an answer from per-token P(right) (the ONNX graph's output).

    Two columns, as a served two-label PRM answers them: ``[1 - p, p]`` when P(right) is
    column 1, ``[p, 1 - p]`` when it is column 0 (:func:`correct_column`).

    Examples:
        >>> token_rows([0.25], 1), token_rows([0.25], 0)
        ([[0.75, 0.25]], [[0.25, 0.75]])
    """
    out = []
    for p in probs:
        p = float(p)
        out.append([1.0 - p, p] if column == 1 else [p, 1.0 - p])
    return out
