"""Optuna studies over preference-optimisation runs, traced to value drift: space, objectives, study."""
