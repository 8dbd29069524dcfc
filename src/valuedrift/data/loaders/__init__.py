"""Loaders that map real (hub) datasets into our schemas.

Each loader takes a hub id or a local path (file or folder in the dataset's own format) and goes
through ``datasets.load_dataset``; tests use small local fixtures in each format (tests/fixtures/).
Modules: ``probes`` (V-PRISM/PRISM, OpinionQA, GlobalOpinionQA → Probe), ``sft`` (WildChat, Alpaca →
prompt/completion rows), ``preferences`` (UltraFeedback binarized, HH-RLHF → prompt/chosen/rejected).
"""
