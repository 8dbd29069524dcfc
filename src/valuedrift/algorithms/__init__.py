"""The preference-optimisation algorithm registry: one entry per algorithm, with its TRL trainer."""
