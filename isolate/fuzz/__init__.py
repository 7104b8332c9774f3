"""Fuzz-harness runner and triage (isolate fuzz)."""
