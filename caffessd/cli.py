"""The `caffessd` command: a thin click shell over the Python API.

Each subcommand lives with its feature (caffessd/commands/*.py) and is
registered in COMMANDS below. Errors derived from CaffessdError become one
line on stderr and exit status 1, never a traceback; Ctrl-C exits 130 and
SIGTERM, handled the same way, 143.
"""
from __future__ import annotations

import importlib
import re
import signal
import sys
import threading
from contextlib import contextmanager

import click

from caffessd import __version__
from caffessd.errors import CaffessdError, Terminated

# (command name, module) pairs; a module exposes `command`, a click.Command.
COMMANDS = [
    ("detect", "caffessd.commands.detect_cmd"),
    ("inspect", "caffessd.commands.inspect_cmd"),
    ("merge-bn", "caffessd.commands.merge_bn_cmd"),
    ("gen-model", "caffessd.commands.gen_model_cmd"),
    ("export-onnx", "caffessd.commands.export_onnx_cmd"),
    ("export-openvino", "caffessd.commands.export_openvino_cmd"),
    ("export-ncnn", "caffessd.commands.export_ncnn_cmd"),
    ("export-tflite", "caffessd.commands.export_tflite_cmd"),
    ("quantize", "caffessd.commands.quantize_cmd"),
    ("convert-tf", "caffessd.commands.convert_tf_cmd"),
    ("eval", "caffessd.commands.eval_cmd"),
    ("make-lmdb", "caffessd.commands.make_lmdb_cmd"),
    ("inspect-lmdb", "caffessd.commands.inspect_lmdb_cmd"),
    ("train", "caffessd.commands.train_cmd"),
    ("fit-priors", "caffessd.commands.fit_priors_cmd"),
    ("lint-dataset", "caffessd.commands.lint_dataset_cmd"),
]


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs, so that
    `caffessd --help` and light commands never pay for onnx or TensorFlow."""

    def list_commands(self, ctx):
        return [name for name, _ in COMMANDS]

    def get_command(self, ctx, name):
        for command_name, module_name in COMMANDS:
            if command_name == name:
                return importlib.import_module(module_name).command
        return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="caffessd")
def cli():
    """Caffe SSD detectors (MobileNet-SSD, MobileNetV2-SSD, SSDLite) without Caffe."""


_PATH_PROBLEM = re.compile(r"^(?:File|Directory|Path) (['\"])(?P<path>.*)\1 (?P<what>.*?)\.?$", re.S)


def one_line(text: str) -> str:
    """Line breaks (a value quoted from a CRLF file, a library's message) become spaces."""
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


def usage_line(exc: click.exceptions.UsageError) -> str:
    """Click's usage errors as one line: a path option's problem names the path
    first (`PATH: is a directory (--out)`), other options their name."""
    message = " ".join(exc.format_message().split())  # one line whatever the value holds
    param = getattr(exc, "param", None)
    hint = "/".join(param.opts) if param is not None and getattr(param, "opts", None) else None
    if isinstance(exc, click.BadParameter) and param is not None and isinstance(param.type, click.Path):
        match = _PATH_PROBLEM.match(" ".join(exc.message.split()))
        if match:
            what = {"is a file": "is a file, expected a folder",
                    "is a directory": "is a directory, expected a file"}.get(match.group("what"), match.group("what"))
            return f"{match.group('path')}: {what} ({hint})"
    command = exc.ctx.command_path if exc.ctx is not None else "caffessd"
    return f"{message} (see '{command} --help')"


def interrupt_exit(exc: BaseException) -> None:
    """One line and the shell's status for Ctrl-C (130) or SIGTERM (143)."""
    if isinstance(exc, Terminated):
        click.echo("caffessd: terminated", err=True)
        sys.exit(128 + Terminated.signal_number)
    click.echo("caffessd: interrupted", err=True)
    sys.exit(130)


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread while a
    command runs, so it ends the way Ctrl-C does: partial outputs removed,
    finished results kept. Only the main thread can own a signal handler; an
    embedding program that calls main() from another thread keeps its own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None):
    try:
        with sigterm_as_interrupt():
            cli.main(args=argv, prog_name="caffessd", standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # click turns Ctrl-C (and Terminated) into Abort
            interrupt_exit(exc.__context__)
        click.echo("caffessd: aborted", err=True)
        sys.exit(1)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.UsageError as exc:
        click.echo(f"caffessd: error: {one_line(usage_line(exc))}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CaffessdError as exc:
        click.echo(f"caffessd: error: {one_line(str(exc))}", err=True)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        interrupt_exit(exc)
    sys.exit(0)
