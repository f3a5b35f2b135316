"""Backfill stage: caption large image sets with Bedrock batch inference (README "Backfills")."""
