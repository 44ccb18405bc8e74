"""The persistent XLA compilation cache that the ``nlpjax`` command turns on by default.

JAX can keep compiled programs on disk and load them when the same program (same code,
shapes, shardings, devices and jax version) is compiled again, in any later process. A
researcher reruns the same experiment many times; with the cache, every run after the
first skips compiling its training step, initialisation and evaluation programs.

The command (``nlpjax.cli.main``) enables it before any compilation, unless the user has
chosen otherwise:

- ``JAX_COMPILATION_CACHE_DIR`` set, or ``jax_compilation_cache_dir`` already set in this
  process: left as it is (JAX's own setting wins);
- ``NLPJAX_COMPILATION_CACHE=off`` (or ``0``, ``none``, ``false``): no cache;
- ``NLPJAX_COMPILATION_CACHE=DIR``: the cache lives in DIR;
- otherwise ``$XDG_CACHE_HOME/nlpjax/xla`` (``~/.cache/nlpjax/xla``).

Programs that compile in at least ``MIN_COMPILE_SECONDS`` are stored. The directory has
JAX's default size (no limit): ``JAX_COMPILATION_CACHE_MAX_SIZE=BYTES`` caps it, with the
least recently used entries deleted first (JAX needs the ``filelock`` package for that,
which nlpjax does not install). The Python API (``nlpjax.api``) leaves JAX's
configuration to the caller.
"""

import os
import sys
from collections.abc import Mapping, MutableMapping

ENV = "NLPJAX_COMPILATION_CACHE"
OFF = ("0", "off", "none", "false", "no")
MIN_COMPILE_SECONDS = 0.1


def cache_dir(environ: Mapping[str, str]) -> str | None:
    """The directory the command should use, or None (off, or JAX's own setting rules)."""
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    value = environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return os.path.expanduser(value)
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nlpjax", "xla")


def enable(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Turns the cache on for this process (and the processes it starts); returns its
    directory, or None where nothing was changed.

    Before jax is imported this sets JAX's environment variables, so nothing imports jax
    early (a command may still choose the platform or the simulated devices); after, it
    updates ``jax.config`` (an in-process call of the command).
    """
    path = cache_dir(environ)
    if path is None:
        return None
    jax = sys.modules.get("jax")
    if jax is None:
        environ["JAX_COMPILATION_CACHE_DIR"] = path
        environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(MIN_COMPILE_SECONDS))
        return path
    if jax.config.jax_compilation_cache_dir:
        return None
    for key, value in jax_settings(path).items():
        jax.config.update(key, value)
    return path


def jax_settings(path: str) -> dict:
    """The ``jax.config`` values of the command's cache in ``path``."""
    return {
        "jax_compilation_cache_dir": path,
        "jax_persistent_cache_min_compile_time_secs": MIN_COMPILE_SECONDS,
    }
