"""The shipped caption handler, except that a model call the stand-in holds never comes back.

The caption handler cuts every call's read timeout to the time its invocation has left, so the
stand-in's ``timeout`` fault alone ends as a ``ReadTimeoutError`` inside the function, never as a
Lambda timeout. A real answer can still outlive the function (bytes trickling in more slowly than a
per-read timeout notices); this wrapper makes that happen on cue: the call that met the fault
hangs instead of raising, until the runtime kills the execution environment at the function
timeout. Everything else is the real handler:
``LocalOptions(caption_handler="tests.e2e.hung_model_call.lambda_handler")``.
"""

from __future__ import annotations

import time
from typing import Any

from lambdas.caption import bedrock
from lambdas.caption.handler import lambda_handler as shipped_handler
from lambdas.caption.model import ModelCallError

_shipped_call = bedrock.BedrockConverse.__call__


def _call_that_outlives_the_function(
    self: bedrock.BedrockConverse, request: dict[str, Any], budget_s: float
) -> dict[str, Any]:
    try:
        return _shipped_call(self, request, budget_s)
    except ModelCallError as exc:
        if exc.code == "ReadTimeoutError":
            time.sleep(3600)  # the runtime kills this environment at the function timeout
        raise


def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    # Patched here, not at import: only ever inside the worker process that runs this handler,
    # never in a test process that merely imports the module.
    bedrock.BedrockConverse.__call__ = _call_that_outlives_the_function  # type: ignore[method-assign]
    return shipped_handler(event, context)
