"""Subprocess helpers for tests (shared with the lab's demo in natlab.services)."""

from natlab.services import is_listening, rendezvous_process, wait_for_line

__all__ = ["is_listening", "rendezvous_process", "wait_for_line"]
