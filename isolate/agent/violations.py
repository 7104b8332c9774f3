"""Violations as data: what the sandbox refused during a command (placeholder)."""

from __future__ import annotations


def mark(session):
    return None


def collect(session, mark_, run) -> list:
    return []


def render(violations) -> str:
    return ""
