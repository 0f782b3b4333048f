"""``edgetl cache``: where edgetl's cache is, how big, and ``clean`` to empty it."""

from __future__ import annotations

import shutil
from typing import Any

import click
from edgetl.cli.common import emit, quiet_option
from edgetl.data import pixels
from edgetl.model.weights import cache_dir


def _parts() -> dict[str, Any]:
    """Each part of the cache: its folder, size and file count."""

    out = {}
    for name, folder in (("weights", cache_dir()), ("pixels", pixels.default_dir())):
        size, files = pixels.folder_size(folder)
        out[name] = {"path": str(folder), "bytes": size, "files": files}
    return out


def _line(name: str, part: dict[str, Any]) -> str:
    return f"{name:8s} {part['bytes'] / 1e6:10.1f} MB  {part['files']:5d} files  {part['path']}"


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the folders and sizes as JSON.")
@click.pass_context
def cache(ctx: click.Context, as_json: bool) -> None:
    """Show edgetl's cache: the offline weights and the decoded pixels, with their sizes.

    \b
    Where: $EDGETL_CACHE (both parts), else $XDG_CACHE_HOME/edgetl, else ~/.cache/edgetl;
    $EDGETL_PIXEL_CACHE moves the pixels alone. `edgetl cache clean` empties the pixels.
    """
    if ctx.invoked_subcommand is None:
        parts = _parts()
        emit(parts, as_json, "\n".join(_line(name, part) for name, part in parts.items()))


@cache.command("clean")
@click.option(
    "--weights",
    "with_weights",
    is_flag=True,
    help="Also remove the offline weights (`edgetl weights install` rebuilds them).",
)
@quiet_option
def cache_clean(with_weights: bool) -> None:
    """Empty the pixel cache (decoded again when a run needs it); with --weights, the weights too."""
    parts = _parts()
    freed = 0
    for name in ("pixels", "weights") if with_weights else ("pixels",):
        shutil.rmtree(parts[name]["path"], ignore_errors=True)
        freed += parts[name]["bytes"]
    click.echo(f"freed {freed / 1e6:.1f} MB")
