"""Code shared by both Lambda stages: key layout, message schema, records, settings, adapters."""
