"""Where one checkpoint's stance evaluation goes: each part the tracers run at a checkpoint, timed alone on a
trained model with the settings of params.yaml.

- likelihood route on the trace probes (``eval.trace_probes_per_topic``) and on the phase probes
  (``eval.phase_probes_per_topic``, first and last checkpoint of a run);
- the capability probe (``eval.capability_rows`` held-out general rows);
- the quick judged route (``eval.quick``): sampling K answers per trace probe, then the judge.

A trace checkpoint costs likelihood(trace) + capability + sampling + judge; a phase checkpoint the same
with likelihood(phase). Rounds repeat the sequence; reported: the median seconds of each part.

    .venv/bin/python benchmarks/bench_checkpoint_eval.py --checkpoint runs/sft/neutral_heavy/final
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from valuedrift.config.load import load_params  # noqa: E402
from valuedrift.data.bank import load_general  # noqa: E402
from valuedrift.data.probes import load_probe_bank, select_probes  # noqa: E402
from valuedrift.stance.capability import CapabilityProbe, heldout_general_ids  # noqa: E402
from valuedrift.stance.evaluation import load_policy, make_judge  # noqa: E402
from valuedrift.stance.likelihood import LikelihoodScorer  # noqa: E402
from valuedrift.stance.paper_route import judge_samples  # noqa: E402
from valuedrift.stance.sampling import generate_samples  # noqa: E402


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_checkpoint_eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a trained model folder (e.g. runs/sft/neutral_heavy/final)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/checkpoint_eval.json")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    ev, q = params.eval, params.eval.quick
    bank = load_probe_bank(Path(a.data))
    trace = select_probes(bank, ev.trace_probes_per_topic, ev.splits, params.probe_seed)
    phase = select_probes(bank, ev.phase_probes_per_topic, ev.splits, params.probe_seed)
    judged_probes = select_probes(bank, q.probes_per_topic, ev.splits, params.probe_seed)
    tokenizer, model = load_policy(params.model, a.checkpoint)
    judge = make_judge(ev.judges, params.model, q.judge)
    scorer = LikelihoodScorer(tokenizer, ev.temperature, ev.batch_size, ev.prompt_format, ev.system_prompt)
    general = load_general(Path(a.data))
    held = heldout_general_ids(general, ev.capability_rows, params.seed)
    capability = CapabilityProbe(tokenizer, [r for r in general if r["id"] in held], ev.batch_size, ev.prompt_format)

    def sample() -> Any:
        return generate_samples(model, tokenizer, judged_probes, k=q.k, temperature=q.temperature, top_p=q.top_p,
                                max_new_tokens=q.max_new_tokens, batch_size=q.batch_size, seed=params.probe_seed,
                                prompt_format=ev.prompt_format, system_prompt=ev.system_prompt)

    parts: dict[str, list[float]] = {}
    for _ in range(a.rounds):
        for name, fn in (("likelihood_trace", lambda: scorer.score(model, trace)),
                         ("likelihood_phase", lambda: scorer.score(model, phase)),
                         ("capability", lambda: capability.measure(model))):
            parts.setdefault(name, []).append(timed(fn)[0])
        seconds, samples = timed(sample)
        parts.setdefault("judged_sampling", []).append(seconds)
        parts.setdefault("judged_judge", []).append(timed(lambda drawn=samples: judge_samples(judge, judged_probes, drawn))[0])
    med = {k: statistics.median(v) for k, v in parts.items()}
    judged = med["judged_sampling"] + med["judged_judge"]
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "checkpoint": a.checkpoint, "rounds": a.rounds,
        "probes": {"trace": len(trace), "phase": len(phase), "judged": len(judged_probes), "capability_rows": len(capability.rows)},
        "quick": {"k": q.k, "max_new_tokens": q.max_new_tokens}, "median_s": med, "all_s": parts,
        "trace_checkpoint_s": med["likelihood_trace"] + med["capability"] + judged,
        "phase_checkpoint_s": med["likelihood_phase"] + med["capability"] + judged,
        "load_average_at_end": os.getloadavg(),
    }
    out = Path(a.out)
    history = json.loads(out.read_text()) if out.exists() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([*history, record], indent=1) + "\n")
    for name, s in med.items():
        print(f"{name:18s} {s:6.2f} s")
    print(f"trace checkpoint {record['trace_checkpoint_s']:.1f} s, phase checkpoint {record['phase_checkpoint_s']:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
