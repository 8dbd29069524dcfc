"""Data written by a language model (answers for a response bank), filtered by a judge."""
