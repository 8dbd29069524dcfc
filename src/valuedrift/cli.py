"""``valuedrift`` — one entry point, a subcommand per pipeline stage.

Every subcommand validates ``params.yaml`` before any work; a bad value exits with status 2 and a
message naming the key, a bad data record with file:line.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

# subcommand -> module with main(argv)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-model": ("valuedrift.stages.prepare_model", "export the bundled model / record the model source"),
    "prepare-data": ("valuedrift.stages.prepare_data", "validate data and build the SFT corpora"),
    "preferences": ("valuedrift.stages.preferences", "generate the synthetic value-gap preference sets"),
    "sft": ("valuedrift.train.sft", "supervised fine-tuning with stance tracing"),
    "po": ("valuedrift.train.po", "preference optimisation with stance tracing"),
    "drift": ("valuedrift.stages.drift", "drift magnitude/time tables and trajectory plots"),
    "check-params": ("valuedrift.stages.check_params", "validate params.yaml and exit"),
}


def usage() -> str:
    lines = ["usage: valuedrift <command> [options]", "", "commands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`valuedrift <command> --help` lists each command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"valuedrift: unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=os.environ.get("VALUEDRIFT_LOG", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from valuedrift.config import ConfigError
    from valuedrift.data.schemas import DataError

    module = importlib.import_module(COMMANDS[cmd][0])
    try:
        module.main(rest)
    except (ConfigError, DataError) as e:
        print(f"valuedrift {cmd}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
