"""Issue 13: `imgcap status` prices 1,000 captions with Lambda's GB-seconds from CloudWatch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from imgcap.ops.status import Usage, cost_per_1000
from lambdas.shared.contract import LAMBDA_PRICE_PER_GB_S, LAMBDA_PRICE_PER_REQUEST

pytestmark = pytest.mark.unit


class FakeCloudWatch:
    def __init__(self, sums: dict[tuple[str, str], float]) -> None:
        self.sums = sums

    def get_metric_statistics(self, **kw: Any) -> dict[str, Any]:
        value = self.sums.get((kw["MetricName"], kw["Dimensions"][0]["Value"]), 0.0)
        return {"Datapoints": [{"Sum": value / 2}, {"Sum": value / 2}]}  # two hours of data


class FakeLambda:
    def get_function_configuration(self, FunctionName: str) -> dict[str, Any]:
        return {"MemorySize": {"resize": 2048, "caption": 512}[FunctionName]}


@dataclass
class FakeClients:
    cloudwatch: Any
    lambda_: Any = field(default_factory=FakeLambda)

    def client(self, name: str) -> Any:
        return {"cloudwatch": self.cloudwatch, "lambda": self.lambda_}[name]


@dataclass
class FakeStack:
    function_names: tuple[str, ...] = ("resize", "caption")


@dataclass
class FakeContext:
    clients: FakeClients
    stack: FakeStack = field(default_factory=FakeStack)


def test_given_lambda_metrics_then_gb_seconds_and_requests_over_captions_written():
    sums = {
        ("Duration", "resize"): 500_000.0,  # ms: 500 s at 2 GB = 1,000 GB-s
        ("Invocations", "resize"): 1_000.0,
        ("Duration", "caption"): 4_000_000.0,  # 4,000 s at 0.5 GB = 2,000 GB-s
        ("Invocations", "caption"): 250.0,
        ("CaptionsWritten", "caption"): 1_000.0,
    }
    ctx = FakeContext(FakeClients(FakeCloudWatch(sums)))
    usage = Usage(captions_read=500, estimated_cost_usd=1.0)
    cost = cost_per_1000(ctx, usage)  # type: ignore[arg-type]
    assert cost is not None
    assert cost["bedrock_usd"] == pytest.approx(2.0)
    expected = 3_000 * LAMBDA_PRICE_PER_GB_S + 1_250 * LAMBDA_PRICE_PER_REQUEST  # per 1,000 captions
    assert cost["lambda_usd"] == pytest.approx(expected, abs=1e-4)  # rounded to 4 decimals
    assert cost["total_usd"] == pytest.approx(2.0 + expected, abs=1e-4)
    assert cost["lambda_gb_seconds"] == pytest.approx(3_000)


def test_given_no_metrics_access_then_only_the_bedrock_figure():
    class Denied:
        def get_metric_statistics(self, **kw: Any) -> dict[str, Any]:
            raise PermissionError("AccessDenied")

    ctx = FakeContext(FakeClients(Denied()))
    cost = cost_per_1000(ctx, Usage(captions_read=4, estimated_cost_usd=0.004))  # type: ignore[arg-type]
    assert cost is not None
    assert cost["bedrock_usd"] == pytest.approx(1.0)
    assert cost["lambda_usd"] is None
    assert "not measured" in cost["basis"]


def test_given_no_captions_then_no_price_per_1000():
    assert cost_per_1000(FakeContext(FakeClients(FakeCloudWatch({}))), Usage()) is None  # type: ignore[arg-type]
