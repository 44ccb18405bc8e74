"""Compiling a jitted program ahead of its first call, in a background thread.

The training loop knows the shapes of its first dispatch (the state's, and a batch's
when the task's ``batch_spec`` hook gives it) before any data is read, so XLA can
compile the step while the host reads the corpus, builds the vocabulary and stream,
initialises the state and opens the writers. A call whose arguments differ from the
compiled signature (another number of steps, a shape the task did not announce) goes
through the jitted function as usual.
"""

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import jax

log = logging.getLogger(__name__)


def signature(args: Any) -> tuple:
    """What a compiled program requires of its arguments: the tree structure, and each
    leaf's shape, dtype and sharding (None for host arrays)."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return treedef, tuple(
        (tuple(x.shape), str(x.dtype), getattr(x, "sharding", None)) for x in leaves
    )


class AheadCompiled:
    """``jitted`` compiled for ``abstract_args`` (``jax.ShapeDtypeStruct`` leaves with
    shardings) in a background thread that starts at construction.

    Calling it with arguments of that signature waits for the compilation and runs the
    compiled program; any other call runs ``jitted`` (which compiles as usual). If the
    ahead compilation fails, calls fall back to ``jitted``, which raises the error on the
    caller's thread.
    ``context`` (a context-manager factory, e.g. ``Placement.context``) is entered in the
    compiling thread: the mesh and Flax's logical axis rules are thread-local, and the
    program must be traced under the ones the caller trains with.
    """

    def __init__(
        self,
        jitted: Callable,
        abstract_args: tuple,
        context: Callable = contextlib.nullcontext,
    ):
        self.jitted, self._context = jitted, context
        self._signature = signature(abstract_args)
        self._compiled = None
        self._lowered = threading.Event()
        self.compiled_calls = 0  # calls that ran the ahead-compiled program
        self._thread = threading.Thread(
            target=self._compile, args=(abstract_args,), name="nlpjax-compile", daemon=True
        )
        self._thread.start()

    def _compile(self, abstract_args: tuple) -> None:
        try:
            with self._context():
                lowered = self.jitted.lower(*abstract_args)
                self._lowered.set()
                self._compiled = lowered.compile()
        except Exception as error:  # noqa: BLE001 (the jitted call reports it)
            log.debug("ahead-of-time compilation failed: %s", error)
        finally:
            self._lowered.set()

    def wait_lowered(self) -> None:
        """Waits until the program is traced and lowered (or the attempt failed): the part
        of compiling that runs Python and so competes with the caller's Python for the
        GIL; XLA's compilation, which follows, releases it."""
        self._lowered.wait()

    def wait(self) -> bool:
        """Waits for the background compilation; True if it gave a program."""
        self._thread.join()
        return self._compiled is not None

    def __call__(self, *args):
        if signature(args) == self._signature and self.wait():
            self.compiled_calls += 1
            return self._compiled(*args)
        return self.jitted(*args)
