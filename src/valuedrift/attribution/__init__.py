"""Drift attribution: which training examples moved which stance (docs/definitions.md "Drift attribution").

TracIn-CP over a traced run's checkpoints: influence(z, s, split) = −(m(z)/N) Σ_c η_c ⟨∇L(z; θ_c), ∇R_{s,split}(θ_c)⟩,
with R the instrument's own readout (mean likelihood-route q of stance s over a probe subset) and gradients
in a documented parameter subset. Modules: :mod:`.readout` (R and ∇R), :mod:`.losses` (the run's per-example
loss), :mod:`.subset` (parameters, projection), :mod:`.tracin` (the sum), :mod:`.runs` (what a run folder
records), :mod:`.tables` / :mod:`.figures` (outputs), :mod:`.pipeline` (one run end to end).
"""
