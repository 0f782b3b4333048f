"""What edgetl does with files it did not write on this machine: received run folders and configs, output paths.

A run folder (or a config file) may come from someone else: a colleague, a CI
artifact, a download. Three rules keep it from acting on this machine:

- **No code from a file.** A config value that loads a model or code (a ``hub:``
  backbone, a weights file) is taken from the command line only, or from a file
  with the explicit ``--trust-config`` switch (:func:`check_config_values`).
- **The data root is this machine's word.** ``edgetl train`` records where the
  images are (``data.json`` ``root``) with an HMAC-SHA256 made with a secret key
  that never leaves this machine (``key``, 0600, in edgetl's cache folder, created
  on first use). A stage reads images through the recorded root only when the HMAC
  verifies (:func:`root_verified`); a received or edited run folder needs the
  images named by the user (``parity --data DIR``, ``--data-root DIR``). Machines
  that share the key file trust each other's run folders.
- **Outputs never overwrite inputs** (:func:`check_output`, built on the device's
  ``edgetl.runtime.guard``).

CSV cells written here go through :func:`csv_field` (formula-safe, reversible for
the split lists edgetl reads back).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from edgetl.errors import ConfigError
from edgetl.runtime import guard
from edgetl.runtime.decode import IMAGE_EXTENSIONS

KEY_NAME = "key"
TRUST_FLAG = "--trust-config"


def edgetl_cache() -> Path:
    """edgetl's cache folder: ``$EDGETL_CACHE``, else ``$XDG_CACHE_HOME/edgetl``, else ``~/.cache/edgetl``."""
    if os.environ.get("EDGETL_CACHE"):
        return Path(os.path.expanduser(os.environ["EDGETL_CACHE"]))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "edgetl"


def machine_key(create: bool = True) -> Optional[bytes]:
    """This machine's secret key (32 random bytes, file mode 0600), created on first use when ``create``.

    The file appears complete or not at all (written under a temporary name, then
    hard-linked into place, which fails if it exists), so two processes starting at
    once agree on one key and neither reads a half-written one. A damaged key file
    verifies nothing and is never overwritten.
    """
    path = edgetl_cache() / KEY_NAME
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        return key if len(key) == 32 else None
    except FileNotFoundError:
        if not create:
            return None
    except (ValueError, OSError):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{KEY_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process made it first: use theirs
            pass
        except OSError:  # a file system without hard links: rename, unless a key appeared meanwhile
            if not path.exists():
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return machine_key(create=False)


def _root_message(kind: str, root: str) -> bytes:
    return json.dumps({"edgetl": "data-root", "kind": kind, "root": root}, sort_keys=True).encode("utf-8")


def sign_root(kind: str, root: str) -> str:
    """The HMAC ``data.json`` records beside its root, made with this machine's key."""
    key = machine_key()
    if key is None:
        return ""
    return hmac.new(key, _root_message(kind, root), hashlib.sha256).hexdigest()


def root_verified(meta: Mapping[str, Any]) -> bool:
    """Whether ``data.json``'s kind and root were recorded by edgetl with this machine's key."""
    mac, kind, root = meta.get("root_hmac"), meta.get("kind"), meta.get("root")
    key = machine_key(create=False)
    if key is None or not all(isinstance(v, str) for v in (mac, kind, root)):
        return False
    return hmac.compare_digest(hmac.new(key, _root_message(kind, root), hashlib.sha256).hexdigest(), mac)


# Config keys whose value can load a model or code, and when a value does.
CODE_KEYS = {
    "backbone": lambda v: isinstance(v, str) and v.startswith("hub:"),
    "weights": lambda v: isinstance(v, str) and v not in ("imagenet", "none"),
}


def check_config_values(values: Mapping[str, Any], source: str, given: Iterable[str], trusted: bool) -> None:
    """Refuse a value from a file that would load code or a model, unless the command line gave it or it is trusted.

    Args:
        values: the config as read from ``source`` (a ``--config`` file, a resumed run's config).
        source: what the values came from, for the message.
        given: keys the command line set explicitly (their values replace the file's).
        trusted: ``--trust-config`` was passed.

    Raises:
        ConfigError: the key, its value and the two ways to pass it.
    """
    if trusted:
        return
    given = set(given)
    for key, loads in CODE_KEYS.items():
        if key in values and key not in given and loads(values[key]):
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"{source} sets {key}={str(values[key])[:200]!r}, which loads and runs a model; a config file may not "
                f"do that: pass {flag} {values[key]} on the command line, or add {TRUST_FLAG} if you trust {source}"
            )


def check_output(path: Optional[str], option: str, files: Sequence[Path] = (), folders: Sequence[Path] = ()) -> None:
    """Refuse an output path that is one of ``files``, or a file (or a new image) inside one of ``folders``.

    Raises:
        ConfigError: the option, the clash and the fix.
    """
    if not path:
        return

    try:
        guard.check_outputs(
            [(path, option)],
            [(str(f), f"{f.name} of the run") for f in files],
            [(str(d), "the input data") for d in folders],
            IMAGE_EXTENSIONS,
        )
    except guard.OutputPathError as exc:
        raise ConfigError(str(exc)) from None


def csv_field(value: str) -> str:
    """``value`` as a CSV field edgetl reads back with :func:`csv_value`: quoted when needed, formula-safe.

    A field starting like a formula (``= + - @`` TAB CR) or with ``'`` gets one
    leading ``'``, which :func:`csv_value` removes again, so any file name survives.
    """
    if value.startswith((*guard.FORMULA_START, "'")):
        value = "'" + value
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n\r') else value


def csv_value(field: str, escaped: bool) -> str:
    """A field written by :func:`csv_field` back to its value (``escaped``: the file was written that way)."""
    return field[1:] if escaped and field.startswith("'") else field
