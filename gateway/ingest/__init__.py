"""Ingest: receive events over HTTP, validate them against the contract, enrich them, and spool them durably."""
