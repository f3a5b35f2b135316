"""The local runtime: the same handlers on loopback servers (moto, a Bedrock stand-in)."""
