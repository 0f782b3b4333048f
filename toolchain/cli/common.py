"""What every ``edgetl`` command shares: error lines and exit codes, interrupts, ``-q``/``-v``, results.

Library errors (``EdgeTLError``, and the runtime's ``CardError``) become one-line
``click.ClickException`` messages here, in one place. TensorFlow is imported only
inside the stage a command calls, so ``edgetl --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator, Optional

import click
from edgetl import log
from edgetl.errors import EdgeTLError
from edgetl.runtime import native_log
from edgetl.runtime.model_card import CardError


class FriendlyGroup(click.Group):
    """Turns library errors into one clean line and the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:

        previous = _on_sigterm_interrupt()
        try:
            with _noting_interrupts():
                return super().invoke(ctx)
        except EdgeTLError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = exc.exit_code
            raise error from None
        except CardError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = 3  # a model or card that cannot be used: bad input, like EdgeTLError's default
            raise error from None
        except OSError as exc:  # a full disk, a read-only or vanished path: one line with the path, exit 3
            error = click.ClickException(os_error_line(exc))
            error.exit_code = 3
            raise error from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception:
            if not _INTERRUPTED:
                raise
            # Ctrl-C inside TensorFlow's graph building can surface as another exception (the
            # library caught the KeyboardInterrupt and raised its own): still an interrupt.
            click.echo("interrupted", err=True)
            sys.exit(130)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


_INTERRUPTED: list[int] = []  # SIGINTs seen while a command ran


@contextlib.contextmanager
def _noting_interrupts() -> Iterator[None]:
    """Ctrl-C raises ``KeyboardInterrupt`` as usual, and is remembered (see ``FriendlyGroup.invoke``)."""

    def _on_sigint(signum: int, frame: Any) -> None:
        _INTERRUPTED.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield  # not ours to replace (a test runner, an embedding program)
        return
    _INTERRUPTED.clear()
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _raise_interrupt(signum: int, frame: Any) -> None:
    _INTERRUPTED.append(signum)  # remembered like a SIGINT (see ``FriendlyGroup.invoke``)
    raise KeyboardInterrupt


def _on_sigterm_interrupt() -> Any:
    """SIGTERM (systemd, a CI timeout, `kill`) stops a command the way Ctrl-C does: the interrupted
    stage cleans up or says how to resume, and the exit code is 130. The previous handler, or None
    when not on the main thread (no handler can be set there)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def os_error_line(exc: OSError) -> str:
    """``PATH: reason; fix`` for an operating-system error that reached the command line."""
    where = f"{exc.filename2 or exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{where}{reason}; free disk space or fix the path's permissions and run the command again"


def quiet_option(func: Callable[..., Any]) -> Callable[..., Any]:
    def _set(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        log.QUIET = log.QUIET or value
        return value

    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_set,
        is_eager=True,
        help="Only results on stdout; no stage lines or progress.",
    )(func)


def verbose_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-v``: let TensorFlow's, LiteRT's and the converter's own (native) log lines through."""

    def _set(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            log.VERBOSE = native_log.SHOW = True
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # before TensorFlow loads
        return value

    return click.option(
        "-v",
        "--verbose",
        is_flag=True,
        expose_value=False,
        callback=_set,
        is_eager=True,
        help="Show TensorFlow's, LiteRT's and the converter's own log lines (hidden by default).",
    )(func)


def emit(result: dict[str, Any], as_json: bool, text: str) -> None:
    """Print a command's result to stdout, as JSON or as a human line."""
    click.echo(json.dumps(result, indent=2) if as_json else text)


def dataclass_defaults(cls: type) -> dict[str, Any]:
    """Field -> default of a config dataclass: the CLI's one source of truth for defaults."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def alias_option(old: str, dest: str, kind: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A hidden old spelling of an option (``--max-per-class`` for ``--per-class``): same value, not in --help."""

    def _store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            ctx.meta.setdefault("aliases", {})[dest] = value

    return click.option(old, type=kind, hidden=True, expose_value=False, callback=_store)


def with_aliases(ctx: click.Context, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every hidden alias the user gave applied (the new spelling wins when both are given)."""
    for dest, value in ctx.meta.get("aliases", {}).items():
        if ctx.get_parameter_source(dest) in (None, click.core.ParameterSource.DEFAULT):
            values[dest] = value
    return values


DATA_ROOT_HELP = (
    "The folder holding the run's images, for a run folder not trained on this machine "
    "(its recorded data root is used only when this machine recorded it)."
)
data_root_option = click.option(
    "--data-root", type=click.Path(exists=True), help=DATA_ROOT_HELP
)  # edgetl.untrusted: a received run folder cannot choose which files are read


class HiddenAliases(click.Option):
    """An option whose first name is shown and whose later names (older spellings in users' scripts) still work."""

    def get_help_record(self, ctx: click.Context) -> Optional[tuple[str, str]]:
        shown, self.opts = self.opts, self.opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown

    def get_error_hint(self, ctx: click.Context) -> str:
        return f"'{self.opts[0]}'"


def defaulted(defaults: dict[str, Any], name: str, kind: Any = None, **options: Any) -> Callable[..., Any]:
    """An option whose default (shown in ``--help``) comes from a config dataclass: ``--fine-tune-epochs``
    reads ``defaults["fine_tune_epochs"]``, so the CLI never restates a default."""
    dest = name.split("/")[0].lstrip("-").replace("-", "_")
    return click.option(name, type=kind, default=defaults[dest], show_default=True, **options)


def training_options(defaults: dict[str, Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--batch-size``, ``--patience`` and ``--augment/--no-augment``: the options ``train`` and ``qat`` share,
    each with its own config's defaults."""
    options = (
        defaulted(defaults, "--batch-size", int, help="Images per training step."),
        defaulted(
            defaults,
            "--patience",
            int,
            help="Early stopping: epochs without a better val loss before a phase ends (best weights restored).",
        ),
        defaulted(defaults, "--augment/--no-augment", help="Flip, small rotation and contrast."),
    )

    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return apply
