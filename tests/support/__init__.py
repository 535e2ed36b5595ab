"""Helpers shared by the test packages (ports, processes, environment rules)."""
