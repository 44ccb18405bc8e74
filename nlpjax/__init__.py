"""nlpjax: a pure-functional JAX/Flax research framework for NLP.

The scripting surface (see README.md, "Scripting from Python")::

    import nlpjax
    config = nlpjax.load_config("experiments/shakespeare_char.py:tiny", {"optim.lr": 3e-3})
    summary = nlpjax.train(config, "/tmp/run")          # the summary dict
    trained = nlpjax.load("/tmp/run")                   # config, params, tokenizer
    trained.evaluate()                                  # {"loss": ..., "perplexity": ...}
    trained.generate("ROMEO:", max_new_tokens=100, temperature=0.8, seed=0)
    nlpjax.register_task("my_lm", MyTask)               # a family from outside the package

``import nlpjax`` stays cheap: these names load JAX and the tasks on first use.
"""

from nlpjax import errors  # a leaf: the error classes, no JAX

__version__ = "0.1.0"

_API = ("TASKS", "Trained", "load", "load_config", "register_task", "train")
__all__ = [*_API, "__version__", "errors"]


def __getattr__(name: str):
    if name in _API:
        from nlpjax import api

        return getattr(api, name)
    raise AttributeError(f"module 'nlpjax' has no attribute {name!r}")
