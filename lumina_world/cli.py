"""``python -m lumina_tools world ...``: the synthetic world from the command line.

    python -m lumina_tools world generate --out data/world --scenes 2000 --seed 0
    python -m lumina_tools world generate --out data/world-t2i --scenes 2000 --seed 0 --folder-mode
    python -m lumina_tools world train        # the bundled model, models/lumina_mgpt/lumina-mgpt-world
    python -m lumina_tools world probe        # does it know which object is where (binding_probe)
"""

from __future__ import annotations

import argparse
import sys

from .dataset import WORLD_TASKS, write_world_dataset
from .folder_dataset import write_folder_dataset


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lumina_tools world", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write the world dataset (PNGs + conversation JSONL)")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--scenes", type=int, required=True, help="number of scenes")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--folder-mode", action="store_true",
                   help="text-to-image only: NNNNNN.png + NNNNNN.txt caption (the trainer's folder format)")
    g.add_argument("--tasks", default=",".join(WORLD_TASKS),
                   help=f"comma-separated subset of {','.join(WORLD_TASKS)}")
    g.add_argument("--views", type=int, default=4, help="frames per multiview example")
    t = sub.add_parser("train", help="train the bundled small model (VQGAN, tokenizer, Lumina-mGPT) "
                                     "from scratch")
    from dataclasses import fields

    from .train import WorldTrainConfig

    defaults = WorldTrainConfig()
    t.add_argument("--out", default=defaults.out, help="model folder to write")
    t.add_argument("--work", dest="work_dir", default=defaults.work_dir,
                   help="run folder (stages found finished there are reused)")
    t.add_argument("--fresh", action="store_true", help="delete --work first")
    for f in fields(WorldTrainConfig):
        if f.name in ("out", "work_dir"):
            continue
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):  # argparse's type=bool would read "False" as true
            t.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            t.add_argument(flag, type=type(default), default=default)
    q = sub.add_parser("probe", help="ask every object's place and caption every scene (binding_probe)")
    q.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    q.add_argument("--scenes", type=int, default=300, help="number of scenes (1 to 4 objects each)")
    q.add_argument("--seed", type=int, default=0, help="which scenes")
    q.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "train":
        import logging
        from dataclasses import fields

        from .train import WorldTrainConfig, clean_work_dir, run

        logging.basicConfig(level=logging.WARNING)
        values = {f.name: getattr(args, f.name) for f in fields(WorldTrainConfig)}
        try:
            cfg = WorldTrainConfig(**values)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if args.fresh:
            clean_work_dir(cfg.work_dir)
        print(run(cfg, log=lambda msg: print(msg, flush=True)))
        return 0
    if args.command == "probe":
        from .benchmark import DEFAULT_MODEL
        from .binding_probe import report, run_probe

        if args.scenes < 1:
            print("error: --scenes must be at least 1", file=sys.stderr)
            return 2
        try:
            result = run_probe(args.model or DEFAULT_MODEL, args.scenes, args.seed, threads=args.threads)
        except (ValueError, OSError) as err:  # no such folder, not a model folder, unreadable files
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(report(result))
        return 0
    if args.command == "generate":
        try:
            if args.folder_mode:
                ds = write_folder_dataset(args.out, args.scenes, args.seed)
            else:
                tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
                ds = write_world_dataset(args.out, args.scenes, args.seed, tasks, views=args.views)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        for task, n in ds.counts.items():
            print(f"{task}: {n}", file=sys.stderr)
        print(ds.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
