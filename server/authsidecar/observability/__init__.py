"""Logs (text or JSON, with the request id of the call they belong to)."""
