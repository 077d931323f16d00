"""The lyra-hf commands' entry points (pyproject.toml's `[project.scripts]`).

Ctrl-C or SIGTERM while Python imports lyra-hf, torch and transformers (the first seconds of every command) ends the
command as it does later (`lyra_hf.cli.main`): in one line, with exit code 130 or 143. This module imports nothing
heavy, so that its handlers are in place from the command's first instant; `lyra_hf.cli.main` puts its own in place
once the imports are done. Nothing is written before then.
"""

import importlib
import os
import signal
import sys


COMMANDS = {
    "lyra-train": "lyra_hf.train",
    "lyra-predict": "lyra_hf.predict",
    "lyra-scan": "lyra_hf.scan",
    "lyra-design": "lyra_hf.design",
    "lyra-prior": "lyra_hf.prior",
}


def interrupted(command: str):
    def handler(signum, frame):
        os.write(
            2, f"{command}: interrupted ({signal.Signals(signum).name}) while starting; nothing was written\n".encode()
        )
        os._exit(128 + signum)

    return handler


def launch(command: str) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupted(command))
    main = importlib.import_module(COMMANDS[command]).main
    sys.exit(main())


def train() -> None:
    launch("lyra-train")


def predict() -> None:
    launch("lyra-predict")


def scan() -> None:
    launch("lyra-scan")


def design() -> None:
    launch("lyra-design")


def prior() -> None:
    launch("lyra-prior")
