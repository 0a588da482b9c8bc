"""The ``ditr`` command line: one sub-command per module in :mod:`ditr.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
adding a command means adding its module name to ``COMMANDS``. Errors caused by user input
(:class:`~ditr.errors.DitrError`) are printed as one line and exit with status 2, never a traceback;
so is a full disk (``ENOSPC`` / ``EDQUOT``, naming the file where the error does). A closed pipe
(``ditr ... | head``) ends quietly with status 141 (128 + SIGPIPE, as the shell's own tools do).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import warnings

from . import __version__
from .errors import DitrError

COMMANDS = ["synth", "inspect", "project", "import_", "features", "train", "evaluate", "demo", "distill", "predict",
            "info", "export", "models", "recipe"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ditr",
        description="DITR: 2D foundation-model features for 3D point-cloud segmentation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'ditr COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"ditr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS:
        module = importlib.import_module(f".commands.{module_name}", __package__)
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP,
                           epilog=getattr(module, "EXAMPLES", None),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


#: Commands whose trailing positional list takes presets and ``key=value`` overrides.
OVERRIDE_LISTS = ("items", "overrides")


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``, also taking ``key=value`` overrides written after an option.

    argparse fills a positional list from one run of positionals only, so ``ditr train synthetic
    --work-dir runs/x trainer.epochs=1`` would stop at ``trainer.epochs=1``; a user writes overrides
    wherever they like, so such leftovers join the command's override list. Anything else left over
    gets argparse's own error.
    """
    args, extra = parser.parse_known_args(argv)
    target = next((name for name in OVERRIDE_LISTS if isinstance(getattr(args, name, None), list)), None)
    if extra and target is not None and all("=" in item and not item.startswith("-") for item in extra):
        getattr(args, target).extend(extra)
    elif extra:
        parser.parse_args(argv)  # exits with argparse's message naming the unrecognised arguments
    return args


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting make torch many times slower as soon as another process
    # shares the cores (seen here: 2.4 s -> 12.6 s for one PTv3 forward). Set before a command
    # imports torch (commands import it lazily), and only when ditr runs as a program.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parse_arguments(parser, argv)
    if not hasattr(args, "_run"):
        parser.print_help()
        return 1
    plain_format = warnings.formatwarning
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: (  # one line each
        f"ditr {args.command}: warning: {message}\n")
    stdout_before = _stdout_file()
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except SystemExit as exc:
        # rich's console meets a closed pipe itself: it points stdout at /dev/null and exits with 1
        if exc.code == 1 and _stdout_file() != stdout_before:
            return 141
        raise
    except DitrError as exc:
        print(f"ditr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ditr {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        full = _disk_full(exc)
        if full is None:
            raise
        where = f" writing {full.filename}" if full.filename else ""
        print(f"ditr {args.command}: error: no space left on the device{where} ({os.strerror(full.errno)}); "
              "free some space and run the command again", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = plain_format


def _disk_full(exc: BaseException | None) -> OSError | None:
    """The ``ENOSPC`` / ``EDQUOT`` error in ``exc`` or what caused it, else None."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _stdout_file() -> tuple[int, int] | None:
    """(device, inode) of the file behind stdout: it changes only when a closed pipe is swapped for /dev/null."""
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (captured output)
        return None
    return st.st_dev, st.st_ino


def _closed_pipe() -> int:
    """The reader of stdout went away: nothing more to say; keep Python from complaining at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


if __name__ == "__main__":
    sys.exit(main())
