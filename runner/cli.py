"""Command line of the headless runner (README "Headless and multi-GPU training").

    python -m flowlora.run WORKFLOW.json [--set NODE.INPUT=VALUE ...] [--trainer NODE ...]
    torchrun --nproc-per-node 2 -m flowlora.run WORKFLOW.json ...      # data parallel

Runs only what the workflow's LoRA Trainer nodes need (loaders, Dataset, settings nodes,
the trainer; not the samplers and plots after it) with ComfyUI's own executor, and writes
what the node writes: the LoRA with its metadata, the log, the resumable state.

Under torchrun (``WORLD_SIZE`` > 1) each process joins the default process group (NCCL on
GPUs, gloo on CPU), trains on its own device (``LOCAL_RANK``), and the trainer trains
data-parallel (``trainer_core.data_parallel``): ``batch_size`` is then per rank. After an
elastic restart (``TORCHELASTIC_RESTART_COUNT`` > 0) the trainers resume from their state.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from . import graph, host

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m flowlora.run", description="Train a workflow's LoRA Trainer without the ComfyUI server (also under torchrun).")
    p.add_argument("workflow", help="workflow JSON, UI format (as saved by the frontend) or API format")
    p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="change a widget value; NODE is a node id, title or class type, VALUE a JSON literal or text (repeatable)")
    p.add_argument("--trainer", action="append", default=[], metavar="NODE", help="train only this LoRA Trainer (id or title; repeatable); default: every trainer, in id order")
    p.add_argument("--resume", action="store_true", help="turn on each trainer's resume (continue from its resumable state)")
    p.add_argument("--overwrite", action="store_true", help="turn on each trainer's overwrite (replace an earlier run of the same output_name)")
    p.add_argument("--comfyui", help="ComfyUI folder (default: COMFYUI_PATH, the ComfyUI holding this pack, or the development host)")
    p.add_argument("--base-directory", help="ComfyUI base directory (models/, input/, output/, custom_nodes/), as main.py --base-directory")
    p.add_argument("--custom-nodes", action="append", default=[], metavar="PATH", help="also load this custom node package (repeatable)")
    p.add_argument("--no-custom-nodes", action="store_true", help="do not load the other packages in ComfyUI's custom_nodes")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even where CUDA is available (gloo under torchrun)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0: torch's default; torchrun sets OMP_NUM_THREADS=1 per rank)")
    p.add_argument("--verbose", action="store_true", help="log ComfyUI's and the trainer's messages too")
    return p.parse_args(argv)


class StopOnSigterm:
    """SIGTERM (torchrun stopping the ranks after one failed, SLURM, ``kill``) as ComfyUI's own Cancel.

    The first SIGTERM sets ComfyUI's interrupt flag, which the next ComfyUI layer's forward (or the
    loop's stop check at an update boundary) turns into ``InterruptProcessingException``; the loop
    then saves the last completed step and ComfyUI's executor reports "interrupted" (exit 130).
    Raising ``KeyboardInterrupt`` from the handler instead could land anywhere, e.g. inside that
    save (leaving a new LoRA beside the previous state) or inside ComfyUI's error report (losing the
    message). The flag is set from a helper thread: ComfyUI guards it with a lock that the main
    thread may hold when the signal arrives. Before ComfyUI is imported, or on a second SIGTERM, the
    handler raises ``KeyboardInterrupt`` at once.
    """

    def __init__(self):
        self.received = 0

    def __call__(self, signum, frame) -> None:
        self.received += 1
        model_management = sys.modules.get("comfy.model_management")
        if model_management is None or self.received > 1:
            raise KeyboardInterrupt(f"signal {signum}")
        threading.Thread(target=model_management.interrupt_current_processing, args=(True,), daemon=True).start()


class Distributed:
    """The default process group under torchrun; nothing for a single process."""

    def __init__(self, cpu: bool):
        import torch

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.cuda = not cpu and torch.cuda.is_available()
        self.backend = None
        if self.world > 1:
            import torch.distributed as dist

            if self.cuda:
                torch.cuda.set_device(self.local_rank)  # ComfyUI's device is torch.cuda.current_device()
            self.backend = "nccl" if self.cuda else "gloo"
            # torchrun's static rendezvous (--master-addr/--master-port, its default) keeps one store across
            # elastic restarts, and the ranks' addresses from before a restart stay in it: a restarted rank
            # could read a killed rank's address and fail to connect. A key prefix per restart keeps them apart.
            store, _, _ = next(dist.rendezvous("env://"))
            restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            dist.init_process_group(self.backend, store=dist.PrefixStore(f"flowlora/restart_{restart}", store), rank=self.rank, world_size=self.world)

    def barrier(self) -> None:
        if self.backend is not None:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.backend is not None:
            import torch.distributed as dist

            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        code = run(args)
    except (host.HostError, graph.GraphError) as e:
        print(f"flowlora.run: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, StopOnSigterm())
    world = Distributed(args.cpu)
    rank0 = world.rank == 0
    try:
        root = host.find_comfyui(args.comfyui)
        host.start(root, cpu=not world.cuda, base_directory=args.base_directory)
        failed = host.load_nodes(args.custom_nodes, not args.no_custom_nodes)
        if failed and rank0:
            print(f"flowlora.run: custom node packages that failed to load: {', '.join(failed)}", file=sys.stderr)
        info = host.object_info()
        prompt = graph.load(args.workflow, info)
        changes = graph.apply_overrides(prompt, args.set, info)
        trainers = graph.trainers(prompt, args.trainer)
        restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
        for node_id in trainers:
            inputs = prompt[node_id]["inputs"]
            if args.resume or restarts > 0:
                inputs["resume"] = True
            if args.overwrite:
                inputs["overwrite"] = True
        host.validate(prompt, trainers)
        world.barrier()  # every rank checked the output names before rank 0 writes any file
        if rank0:
            print(f"flowlora.run: ComfyUI {root}, {'CUDA' if world.cuda else 'CPU'}"
                  + (f", {world.world} ranks ({world.backend}), batch_size per rank" if world.world > 1 else "")
                  + (f", elastic restart {restarts}: resuming" if restarts else ""), flush=True)
            for line in changes:
                print(f"flowlora.run: --set {line}", flush=True)
        return train(prompt, trainers, world)
    finally:
        world.close()


def train(prompt: dict, trainers: list[str], world: Distributed) -> int:
    from ..nodes.trainer import RUN_EVENTS
    from .progress import Progress

    rank0 = world.rank == 0
    executor = host.Executor()
    for node_id in trainers:
        node = prompt[node_id]
        label = f"{node.get('_meta', {}).get('title') or 'LoRA Trainer'} [{node_id}]"
        progress = Progress(label) if rank0 else None
        token = RUN_EVENTS.set(progress)
        try:
            executor.run(prompt, [node_id])
        except host.ExecutionFailed as e:
            if progress is not None:
                progress.close()
            where = f" (rank {world.rank} of {world.world})" if world.world > 1 else ""
            print(f"flowlora.run{where}: {label}: {e}", file=sys.stderr, flush=True)
            if progress is not None:
                print(f"flowlora.run: {label}: {last_good(progress.last_save, world.world > 1)}", file=sys.stderr, flush=True)
            return 130 if e.interrupted else 1
        finally:
            RUN_EVENTS.reset(token)
            if progress is not None:
                progress.close()
    return 0


def last_good(save: dict | None, parallel: bool) -> str:
    """Where a stopped or failed run can continue from (rank 0's last save of this call)."""
    restart = " (under torchrun, --max-restarts N restarts the ranks and resumes by itself)" if parallel else ""
    if save is None:
        return ("nothing was saved by this run; the files on disk are those of its last earlier save, if any "
                f"(--resume continues from its resumable state){restart}")
    return f"the last good LoRA and resumable state are those of step {save['step']} ({save['reason']}); --resume continues from there{restart}"
