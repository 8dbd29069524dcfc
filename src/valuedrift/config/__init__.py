"""Parameters: the schema (:mod:`.schema`, shapes and ranges) and loading with cross-checks (:mod:`.load`)."""
