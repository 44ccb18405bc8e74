"""The command's persistent compilation cache (nlpjax/compile_cache.py)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nlpjax import compile_cache

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({"HOME": "/h"}, "/h/.cache/nlpjax/xla"),
        ({"HOME": "/h", "XDG_CACHE_HOME": "/x"}, "/x/nlpjax/xla"),
        ({"HOME": "/h", "NLPJAX_COMPILATION_CACHE": "/c"}, "/c"),
        ({"HOME": "/h", "NLPJAX_COMPILATION_CACHE": "~/c"}, "/h/c"),
        ({"HOME": "/h", "NLPJAX_COMPILATION_CACHE": "off"}, None),
        ({"HOME": "/h", "NLPJAX_COMPILATION_CACHE": "0"}, None),
        ({"HOME": "/h", "JAX_COMPILATION_CACHE_DIR": "/j"}, None),  # JAX's own setting wins
    ],
)
def test_cache_dir_follows_the_environment(environ, expected, monkeypatch):
    monkeypatch.setenv("HOME", environ["HOME"])  # expanduser reads the real environment
    assert compile_cache.cache_dir(environ) == expected


def test_enable_leaves_a_cache_set_in_python_alone():
    import jax

    before = jax.config.jax_compilation_cache_dir  # the test session's (conftest.py)
    assert before
    assert compile_cache.enable({"NLPJAX_COMPILATION_CACHE": "/elsewhere"}) is None
    assert jax.config.jax_compilation_cache_dir == before


def test_a_later_process_finds_the_programs_in_the_cache(tmp_path):
    """Before jax is imported, enable() sets JAX's environment variables: a fresh
    process then writes its compiled program to the directory, and a second process
    loads it from there instead of compiling."""
    script = textwrap.dedent(
        """
        import os, sys
        from nlpjax import compile_cache
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        print(compile_cache.enable())
        import jax, jax.numpy as jnp
        from jax._src import monitoring
        hits = []
        monitoring.register_event_listener(
            lambda event, **kw: hits.append(event) if "cache_hits" in event else None
        )
        jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
        print(len(hits))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION")}
    env |= {"NLPJAX_COMPILATION_CACHE": str(tmp_path / "xla"), "PYTHONPATH": str(REPO)}

    def run() -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        return out.stdout.split()

    first = run()
    assert first == [str(tmp_path / "xla"), "0"]
    assert any((tmp_path / "xla").iterdir())
    assert int(run()[1]) >= 1  # the second process read its programs from the cache
