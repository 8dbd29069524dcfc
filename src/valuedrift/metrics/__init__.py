"""Pure functions of stance profiles: drift magnitude and time, alignment, value gap, agreement."""
