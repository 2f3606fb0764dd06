"""Test-side analytics: a seeded event generator (``generate``) and a plain-Python reference of every analytics
definition (``reference``), written independently of the ClickHouse views so that the tests can hold the two
against each other."""
