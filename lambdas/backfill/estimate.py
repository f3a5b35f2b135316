"""What a backfill of N images costs at batch and at on-demand prices, before it runs. Pure.

Per image: the contract's input-token estimate (image + prompt) and the configured maxTokens as an
upper bound of the output (most captions use fewer: the estimate is on the high side).
"""

from __future__ import annotations

from dataclasses import dataclass

from lambdas.shared.contract import (
    NOVA_PRO_BATCH_INPUT_PRICE_PER_1K,
    NOVA_PRO_BATCH_OUTPUT_PRICE_PER_1K,
    NOVA_PRO_INPUT_PRICE_PER_1K,
    NOVA_PRO_OUTPUT_PRICE_PER_1K,
    SSM_DEFAULTS,
    estimate_cost_usd,
    estimate_input_tokens,
    model_cost_usd,
)


@dataclass(frozen=True, slots=True)
class CostEstimate:
    images: int
    input_tokens: int
    output_tokens: int
    batch_usd: float
    on_demand_usd: float

    @property
    def saving_usd(self) -> float:
        return self.on_demand_usd - self.batch_usd


def estimate(
    images: int, prompt: str, max_tokens: int, model_id: str = SSM_DEFAULTS["model-id"]
) -> CostEstimate:
    """At the model's rows of the contract's price table; Nova Pro's when the table lacks the model."""
    input_tokens = images * estimate_input_tokens(prompt)
    output_tokens = images * max_tokens
    batch = model_cost_usd(model_id, input_tokens, output_tokens, batch=True)
    on_demand = model_cost_usd(model_id, input_tokens, output_tokens)
    return CostEstimate(
        images=images,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        batch_usd=batch
        if batch is not None
        else estimate_cost_usd(
            input_tokens, output_tokens, NOVA_PRO_BATCH_INPUT_PRICE_PER_1K, NOVA_PRO_BATCH_OUTPUT_PRICE_PER_1K
        ),
        on_demand_usd=on_demand
        if on_demand is not None
        else estimate_cost_usd(
            input_tokens, output_tokens, NOVA_PRO_INPUT_PRICE_PER_1K, NOVA_PRO_OUTPUT_PRICE_PER_1K
        ),
    )
