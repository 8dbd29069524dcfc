"""Leaves of the package: modules here import nothing else of valuedrift (import-linter keeps it so)."""
