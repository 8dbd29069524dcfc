"""``blind-answers``: sample answers of several checkpoints into a blind set for hand labelling.

    valuedrift blind-answers --checkpoint base=models/base --checkpoint sft=runs/sft/neutral_heavy/final \\
        --per-topic 6 --k 3 --max-new-tokens 128 --out data/labelled_generations

Probes: ``--per-topic`` per (split, topic) of ``eval.splits``, drawn with the tracer's probe seed (nested, so
the trace probes are among them). Decoding: ``eval.paper`` (temperature, top_p), with ``--k`` and
``--max-new-tokens`` overriding it. Writes ``answers.jsonl`` (shuffled, opaque ids: what the labeller
reads), ``key.jsonl`` (id -> checkpoint, kept apart), ``likelihood.jsonl`` (the likelihood route on the same
checkpoints and probes, τ = 1, raw ℓ_s kept) and ``manifest.json`` (settings; checkpoint digests).
See :mod:`valuedrift.generation.blind_answers` and the protocol in data/AUTHORING.md.
"""

from __future__ import annotations

from pathlib import Path

from valuedrift.core.errors import ConfigError
from valuedrift.core.io import tree_digest, write_json
from valuedrift.data.probes import load_probe_bank, select_probes
from valuedrift.generation.blind_answers import sample_blind, write_blind
from valuedrift.stages.args import check_flags, check_path, parse, stage_parser


def named_checkpoints(specs: list[str]) -> dict[str, str]:
    """``name=folder`` flags -> {name: folder}; a malformed or repeated name is a ConfigError on --checkpoint."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError("--checkpoint", f"expected NAME=FOLDER, got {spec!r}")
        if name in out:
            raise ConfigError("--checkpoint", f"name {name!r} is given twice")
        check_path("checkpoint", path, "dir")
        out[name] = path
    return out


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("blind-answers", __doc__, "data", raw_doc=True)
    ap.add_argument("--checkpoint", action="append", required=True, metavar="NAME=FOLDER", help="a checkpoint to sample (repeat)")
    ap.add_argument("--per-topic", type=int, default=6, help="probes per (split, topic) (default: 6)")
    ap.add_argument("--k", type=int, default=None, help="answers per probe (default: eval.paper.k)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="tokens per answer (default: eval.paper.max_new_tokens)")
    ap.add_argument("--seed", type=int, default=None, help="sampling and shuffle seed (default: seed)")
    ap.add_argument("--out", required=True, help="folder for answers.jsonl, key.jsonl, manifest.json")
    a, params = parse(ap, argv)
    check_flags(a, {"data": "dir"}, ["out"])
    for flag, value in (("per-topic", a.per_topic), ("k", a.k), ("max-new-tokens", a.max_new_tokens)):
        if value is not None and value < 1:
            raise ConfigError(f"--{flag}", f"must be >= 1, got {value}")
    checkpoints = named_checkpoints(a.checkpoint)
    ev, paper = params.eval, params.eval.paper
    k, max_new = a.k or paper.k, a.max_new_tokens or paper.max_new_tokens
    seed = params.seed if a.seed is None else a.seed
    probes = select_probes(load_probe_bank(Path(a.data)), a.per_topic, ev.splits, params.probe_seed)
    answers, likelihood = sample_blind(checkpoints, probes, k=k, temperature=paper.temperature, max_new_tokens=max_new,
                           batch_size=paper.batch_size, seed=seed, prompt_format=ev.prompt_format,
                           system_prompt=ev.system_prompt, dtype=params.model.dtype, device=params.model.device,
                                       score_batch_size=ev.batch_size)
    out = Path(a.out)
    write_blind(answers, likelihood, out)
    write_json(out / "manifest.json", {
        "checkpoints": {n: {"path": p, "digest": tree_digest(Path(p))} for n, p in checkpoints.items()},
        "probes": len(probes), "per_topic": a.per_topic, "probe_seed": params.probe_seed, "k": k,
        "temperature": paper.temperature, "top_p": paper.top_p, "max_new_tokens": max_new, "seed": seed,
        "prompt_format": ev.prompt_format, "answers": len(answers),
    })
    print(f"{len(answers)} answers from {len(checkpoints)} checkpoints on {len(probes)} probes -> {out}")
