"""One construct per concern; ``infra.stack`` only wires them together."""
