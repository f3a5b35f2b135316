"""The caption handler counts what issue 11 asks to be counted: superseded, truncated, configuration.

Items 2 (a stale caption ends as ``superseded`` and is counted), 4 (a configuration fault raises
its own metric, which the ``ModelConfigurationErrors`` alarm watches) and 9 (a caption cut at
maxTokens is counted). The outcomes themselves are tested in test_races / test_caption_model.
"""

from __future__ import annotations

from typing import Any

import pytest

from lambdas.caption import handler
from lambdas.caption.model import RetryKind
from lambdas.caption.service import Outcome, Result
from lambdas.shared.observability import Metric

pytestmark = pytest.mark.unit


def _counted(monkeypatch: pytest.MonkeyPatch, result: Result) -> list[str]:
    names: list[str] = []

    def count(name: str, value: float = 1, unit: Any = None) -> None:
        names.append(name)

    monkeypatch.setattr(handler, "count", count)
    monkeypatch.setattr(handler, "count_rejection", lambda code: names.append(f"rejected:{code}"))
    handler._record_metrics(result)
    return names


def test_given_a_superseded_caption_then_it_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    names = _counted(monkeypatch, Result(Outcome.SUPERSEDED, model_called=True, latency_ms=900.0))
    assert names.count(Metric.SUPERSEDED) == 1
    assert Metric.CAPTIONS_WRITTEN not in names


@pytest.mark.parametrize("truncated", [True, False])
def test_given_a_caption_then_only_a_truncated_one_is_counted_as_truncated(
    monkeypatch: pytest.MonkeyPatch, truncated: bool
) -> None:
    names = _counted(monkeypatch, Result(Outcome.CAPTIONED, model_called=True, truncated=truncated))
    assert names.count(Metric.CAPTIONS_WRITTEN) == 1
    assert names.count(Metric.CAPTIONS_TRUNCATED) == (1 if truncated else 0)


def test_given_a_configuration_fault_then_it_has_its_own_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    result = Result(Outcome.DEFERRED, model_called=True, retry=RetryKind.CONFIGURATION, visibility_s=60)
    names = _counted(monkeypatch, result)
    assert names.count(Metric.MODEL_CONFIGURATION_ERRORS) == 1
    assert Metric.MODEL_TRANSIENT_ERRORS not in names
    assert Metric.MODEL_THROTTLES not in names
    assert names.count(Metric.DEFERRED) == 1  # retried, not written off
    assert not [name for name in names if name.startswith("rejected:")]
