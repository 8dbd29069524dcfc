#!/usr/bin/env bash
# Style-only preference sets with other style contrasts: does a style preference move stances?
#
#   benchmarks/style_contrast.sh NAME CHOSEN_STYLES REJECTED_STYLES [ALGORITHM]
#   benchmarks/style_contrast.sh conv_over_reasoned conversational reasoned dpo
#
# After `make run` (it needs runs/sft/<po.start_from> and models/judge). Builds the style_only set of
# params.yaml with prepare_data.preference_sets.style_only.{chosen,rejected}_styles replaced (comma
# lists), trains ALGORITHM (default dpo) on it from the SFT checkpoint with every other setting of
# params.yaml, and prints the run's judged drift with 95% CIs. Everything goes to
# benchmarks/results/style_contrast/NAME/ (git-ignored: params.yaml, the set, the run folder, its own
# MLflow store), so the pipeline's runs/ and mlflow.db are untouched.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,6p' "$0" >&2; exit 2; }
name=$1 chosen=$2 rejected=$3 algo=${4:-dpo}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=benchmarks/results/style_contrast/$name
mkdir -p "$out/processed"
.venv/bin/python - "$out" "$chosen" "$rejected" <<'PY'
import sys
import yaml

out, chosen, rejected = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
params = yaml.safe_load(open("params.yaml"))
style_only = params["prepare_data"]["preference_sets"]["style_only"]
style_only["chosen_styles"], style_only["rejected_styles"] = chosen, rejected
yaml.safe_dump(params, open(f"{out}/params.yaml", "w"), sort_keys=False)
PY
export MLFLOW_TRACKING_URI="sqlite:///$root/$out/mlflow.db" PATH="$root/.venv/bin:$PATH"
valuedrift preferences --params "$out/params.yaml" --set style_only --out "$out/processed" > "$out/preferences.log" 2>&1 \
  || { tail "$out/preferences.log"; exit 1; }
valuedrift po --params "$out/params.yaml" --algorithm "$algo" --preference-set style_only \
  --processed "$out/processed" --out "$out/runs" > "$out/po.log" 2>&1 || { tail "$out/po.log"; exit 1; }
.venv/bin/python - "$out/runs/$algo-style_only" "$chosen > $rejected" "$algo" <<'PY'
"""The run's judged drift (phase ends, paired bootstrap over probes), appended to benchmarks/results/style_contrast.json."""
import json
import sys
import time
from pathlib import Path

import pandas as pd

from valuedrift.config.load import load_params
from valuedrift.core.io import iter_jsonl
from valuedrift.core.rundir import JUDGED_DIR, RunDir
from valuedrift.metrics.summary import drift_metrics, phase_ends

run, contrast, algo = RunDir(Path(sys.argv[1]) / JUDGED_DIR), sys.argv[2], sys.argv[3]
ev = load_params("params.yaml").eval
ckpts = run.trajectory()["checkpoints"]
start, end = (pd.DataFrame([o for _, o in iter_jsonl(run.eval_table(t))]) for t in phase_ends(ckpts))
m = drift_metrics(ckpts, start, end, ev.bootstrap, ev.ci, load_params("params.yaml").seed)
drift = {f"{sp}/{s}": [round(m[f"drift/{sp}/{s}/magnitude{k}"], 4) for k in ("", "_lo", "_hi")]
         for sp in ("all", "dev", "test") for s in ("support", "neutral", "oppose")}
record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "algorithm": algo, "contrast": contrast,
          "route": "judged", "seeds": 1, "run": sys.argv[1], "n_probes": len(end), "drift [magnitude, ci_lo, ci_hi]": drift}
out = Path("benchmarks/results/style_contrast.json")
history = json.loads(out.read_text()) if out.exists() else []
out.write_text(json.dumps([*history, record], indent=1) + "\n")
for key, (v, lo, hi) in drift.items():
    print(f"{key:14s} {v:+.3f} [{lo:+.3f}, {hi:+.3f}]")
PY
