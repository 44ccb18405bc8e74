"""The ``nlpjax`` command line: train, eval, generate, plot, data (thin: parse, dispatch).

Config overrides use ml_collections' flag style: ``--config.optim.lr=3e-4``.
"""

import argparse
import logging
import sys
import time

USAGE_ERRORS_EXIT = 2


def _parse_overrides(extra: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    """``--config.a.b=v`` (or ``--config.a.b v``) pairs; anything else is an error."""
    overrides, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--config."):
            parser.error(f"unrecognized argument: {arg}")
        key, eq, value = arg[len("--config.") :].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                parser.error(f"{arg} needs a value (--config.{key}=VALUE)")
            value, i = extra[i + 1], i + 1
        overrides[key] = value
        i += 1
    return overrides


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlpjax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train or resume an experiment")
    train.add_argument("--config", required=True, help="experiment file, path[:variant]")
    train.add_argument("--workdir", required=True, help="checkpoints, metrics and logs go here")
    train.add_argument("--coordinator_address", default=None, help="multi-host: host:port")
    train.add_argument("--num_processes", type=int, default=None, help="multi-host: count")
    train.add_argument("--process_id", type=int, default=None, help="multi-host: this one")
    train.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() with no flags (Cloud TPU pods, SLURM)",
    )

    plan = sub.add_parser("plan", help="memory per device for a config and mesh")
    plan.add_argument("--config", required=True, help="experiment file, path[:variant]")
    plan.add_argument(
        "--simulate_devices",
        type=int,
        default=0,
        help="plan on N simulated CPU devices (sets XLA_FLAGS; CPU compiler estimates)",
    )

    ev = sub.add_parser("eval", help="evaluate the latest checkpoint of a workdir")
    ev.add_argument("--workdir", required=True)

    gen = sub.add_parser("generate", help="sample text from the latest checkpoint")
    gen.add_argument("--workdir", required=True)
    gen.add_argument("--prompt", default="\n")
    gen.add_argument("--max_new_tokens", type=int, default=200)
    gen.add_argument("--temperature", type=float, default=1.0, help="0 means greedy")
    gen.add_argument("--top_k", type=int, default=0, help="0 disables top-k")
    gen.add_argument("--top_p", type=float, default=1.0, help="1 disables nucleus sampling")
    gen.add_argument("--seed", type=int, default=0)

    plot = sub.add_parser("plot", help="write a PNG of the training curves")
    plot.add_argument("--workdir", required=True)
    plot.add_argument("--output", default=None, help="default: WORKDIR/curves.png")

    data = sub.add_parser("data", help="look at a config's data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    inspect = data_sub.add_parser("inspect", help="sizes, vocabulary, decoded batches, speed")
    inspect.add_argument("--config", required=True, help="experiment file, path[:variant]")
    inspect.add_argument("--split", default="train", choices=["train", "validation"])
    inspect.add_argument("--num_examples", type=int, default=3)
    return parser


def cmd_train(args, overrides) -> int:
    from nlpjax.config import load_config
    from nlpjax.training.loop import train_and_evaluate
    from nlpjax.training.parallel import init_distributed

    flags = (args.coordinator_address, args.num_processes, args.process_id)
    if any(f is not None for f in flags):
        if any(f is None for f in flags):
            raise ValueError(
                "multi-host runs need all of --coordinator_address, --num_processes "
                "and --process_id (or --distributed on Cloud TPU)"
            )
        init_distributed(*flags)
    elif args.distributed:
        init_distributed()

    config = load_config(args.config, overrides)
    summary = train_and_evaluate(config, args.workdir)
    if "eval/loss" in summary:
        print(f"final eval/loss {summary['eval/loss']:.4f} at step {summary['final_step']}")
    return 0


def cmd_plan(args, overrides) -> int:
    import os

    if args.simulate_devices:
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.simulate_devices}"
        )
    from nlpjax.config import load_config
    from nlpjax.training.plan import format_plan, plan

    print(format_plan(plan(load_config(args.config, overrides))))
    return 0


def cmd_eval(args) -> int:
    import jax

    from nlpjax.training.loop import restore_trained
    from nlpjax.training.step import make_eval_fn

    run, step = restore_trained(args.workdir)
    eval_fn = make_eval_fn(run.task)
    batches = jax.device_put(run.task.eval_batches())
    jax.block_until_ready(eval_fn(run.state.params, batches))  # compile
    start = time.perf_counter()
    metrics = jax.block_until_ready(eval_fn(run.state.params, batches))
    seconds = time.perf_counter() - start
    summary = run.task.eval_summary(metrics)
    tokens = float(metrics["weight"])
    print(f"step {step}")
    for key, value in summary.items():
        print(f"eval/{key} {value:.4f}")
    print(f"eval tokens {int(tokens)}, tokens/s {tokens / seconds:,.0f}")
    return 0


def cmd_generate(args) -> int:
    from nlpjax.inference.decode import Generator, SamplingConfig
    from nlpjax.training.loop import restore_trained

    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p)
    if args.max_new_tokens < 0:
        raise ValueError("--max_new_tokens must be >= 0")
    run, _ = restore_trained(args.workdir)
    tokenizer = run.task.tokenizer
    prompt = tokenizer.encode(args.prompt)
    generator = Generator(run.task.model, run.state.params, sampling)
    ids = generator.generate(prompt[None], args.max_new_tokens, seed=args.seed)
    print(args.prompt + tokenizer.decode(ids[0]))
    return 0


def cmd_plot(args) -> int:
    from nlpjax.analysis.curves import plot_curves

    print(plot_curves(args.workdir, args.output))
    return 0


def cmd_data(args, overrides) -> int:
    from nlpjax.config import load_config
    from nlpjax.data.inspect import report
    from nlpjax.tasks import TASKS

    if args.num_examples < 0:
        raise ValueError("--num_examples must be >= 0")
    config = load_config(args.config, overrides)
    print(report(TASKS[config.task](config, None), args.split, args.num_examples))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    with_config = args.command in ("train", "plan", "data")
    overrides = _parse_overrides(extra, parser) if with_config else {}
    if extra and not with_config:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)

    from nlpjax.config import ConfigError
    from nlpjax.data.raw import DataError
    from nlpjax.training.checkpoint import CheckpointMismatchError
    from nlpjax.training.loop import TrainingDiverged

    expected = (ConfigError, DataError, CheckpointMismatchError, FileNotFoundError, ValueError)
    try:
        if args.command == "train":
            return cmd_train(args, overrides)
        if args.command == "plan":
            return cmd_plan(args, overrides)
        if args.command == "data":
            return cmd_data(args, overrides)
        return {"eval": cmd_eval, "generate": cmd_generate, "plot": cmd_plot}[args.command](args)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except expected as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERRORS_EXIT


if __name__ == "__main__":
    sys.exit(main())
