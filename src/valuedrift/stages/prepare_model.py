"""``prepare_model`` stage: make the start model available as a Hugging Face folder (``models/base``).

A bundled name is exported from its GGUF package (cached by DVC, git-ignored); a local folder or hub id
is recorded as a pointer (no weights copied). See :mod:`valuedrift.models`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from valuedrift.config.load import load_params
from valuedrift.models import BUNDLED, export_bundled, write_pointer
from valuedrift.stages.args import check_flags, check_path, stage_parser

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser("prepare-model", __doc__)
    ap.add_argument("--out", default="models/base")
    a = ap.parse_args(argv)
    check_path("params", a.params, "file")
    check_flags(a, {}, ["out"])
    params = load_params(a.params)
    out = Path(a.out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    if params.model.name in BUNDLED:
        export_bundled(params.model.name, tmp, params.model.chat_template)
    else:
        write_pointer(params.model.name, params.model.revision, tmp, params.model.chat_template)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # only a complete export ever appears at models/base
    log.info("model %s ready at %s", params.model.name, out)
