"""Distill the tiny-world Z-Image base into an 8-step, cfg-1 "Turbo"; resumable, on CPU.

    nice .venv/bin/python scripts/tinyworld/distill_turbo.py --minutes 15

Method: step distillation in the manner of progressive distillation (Salimans &
Ho, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR 2022)
with classifier-free guidance distilled into the student (Meng et al., "On
Distillation of Guided Diffusion Models", CVPR 2023), in one round: the
student takes one Euler step per interval of the sampling grid that Z-Image
Turbo is used with (8 steps, ComfyUI's "simple" schedule at shift 3, cfg 1),
the teacher takes ``--substeps`` guided Euler steps over the same interval.

For a training scene x0 and noise eps, an interval k is drawn per image and
x_k = (1 - sigma_k) x0 + sigma_k eps (the data-noised input of progressive
distillation); the teacher (the frozen base, guidance ``--teacher-cfg``)
integrates x_k to x_{k+1}; the student, initialised from the base, regresses
the velocity that lands on the same point in one step:
v* = (x_{k+1} - x_k) / (sigma_{k+1} - sigma_k), loss |v_student(x_k) - v*|^2.
Cost per step: 2 x substeps teacher forwards (conditional and empty prompt)
plus one student forward and backward.

The run continues in ``--run`` (default ``.cache/tinyworld/zimage_turbo``);
EMA weights go to ``scripts/tinyworld/models/zimage_turbo.safetensors``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import pretrain_zimage as pz  # noqa: E402

log = logging.getLogger("distill_turbo")

STEPS = 8
"""Student steps: Z-Image Turbo samples in 8 (to 9) steps."""


def grid(model, steps: int = STEPS):
    """ComfyUI's "simple" sigmas for ``steps`` steps of ``model`` (shift 3): ``(steps + 1,)``, from 1 to 0."""
    import comfy.samplers

    return comfy.samplers.calculate_sigmas(model.model_sampling, "simple", steps).float()


def teacher_velocity(teacher, x, sigma, context, empty, cfg: float):
    """Guided velocity ``v_u + cfg (v_c - v_u)`` (ComfyUI's CFG, in velocity form) of the frozen teacher."""
    v_c = pz.velocity(teacher, x, sigma, context)
    if cfg == 1.0:
        return v_c
    v_u = pz.velocity(teacher, x, sigma, empty.expand(x.shape[0], -1, -1))
    return v_u + cfg * (v_c - v_u)


def distill_loss(run, step: int, encoder, teacher, sigmas, empty, args):
    """One batch: teacher's ``substeps`` guided Euler steps over interval k vs the student's one step (velocity MSE)."""
    import torch

    images, captions, _ = run.stream.next(encoder)
    x0 = pz.to_pixels(images)
    context = encoder.encode(captions)
    gen = pz.step_generator(args.seed, step, stream=1)
    eps = torch.randn(x0.shape, generator=gen)
    k = torch.randint(0, len(sigmas) - 1, (x0.shape[0],), generator=gen)
    s_from, s_to = sigmas[k], sigmas[k + 1]
    x = (1 - s_from.view(-1, 1, 1, 1)) * x0 + s_from.view(-1, 1, 1, 1) * eps
    with torch.no_grad():
        target = x.clone()
        for j in range(args.substeps):
            a = s_from + (s_to - s_from) * j / args.substeps
            b = s_from + (s_to - s_from) * (j + 1) / args.substeps
            v = teacher_velocity(teacher, target, a, context, empty, args.teacher_cfg)
            target = target + (b - a).view(-1, 1, 1, 1) * v
        v_star = (target - x) / (s_to - s_from).view(-1, 1, 1, 1)
    v = pz.velocity(run.model, x, s_from, context)
    loss = (v.float() - v_star).square().mean()
    return loss, {"tokens": int(context.shape[1]), "interval_mean": round(float(k.float().mean()), 2)}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv=None) -> None:
    parser = pz.arguments(description=__doc__.split("\n\n")[0])
    parser.set_defaults(run=pz.CACHE / "zimage_turbo", out=pz.MODELS / "zimage_turbo.safetensors", minutes=15.0, lr=1e-4, warmup=20, ema=0.995, batch=16, seed=1)
    parser.add_argument("--teacher", type=Path, default=pz.MODELS / "zimage_base.safetensors", help="the base model (its EMA export)")
    parser.add_argument("--teacher-cfg", type=float, default=3.0, help="guidance of the teacher (distilled into the cfg-1 student)")
    parser.add_argument("--substeps", type=int, default=4, help="teacher Euler steps per student step")
    args = parser.parse_args(argv)
    encoder = pz.setup(args)
    from safetensors.torch import load_file

    base = load_file(str(args.teacher))
    teacher = pz.build_model(base)
    teacher.eval().requires_grad_(False)
    run = pz.new_run(args.run, args, state=base if not (args.run / pz.Run.STATE).is_file() else None)
    teacher_hash = sha256(args.teacher)
    if run.step and run.meta.get("teacher_sha256") != teacher_hash:
        raise SystemExit(f"{args.run} was distilled from another base than {args.teacher}: start a new run (--run) or delete that folder")
    run.meta = {"kind": "turbo", "teacher_sha256": teacher_hash, "args": {k: str(v) for k, v in vars(args).items()}}
    sigmas = grid(teacher)
    empty = encoder.encode([""])
    log.info("student grid (8 steps, simple, shift 3): %s", [round(float(s), 3) for s in sigmas])
    pz.train(run, lambda r, step: distill_loss(r, step, encoder, teacher, sigmas, empty, args), args)
    log.info("stopped at step %d (%.1f min trained)", run.step, run.seconds / 60)
    if not args.no_export:
        from safetensors import safe_open

        with safe_open(str(args.teacher), "pt") as f:
            base_step = pz.json.loads(f.metadata()["flowlora_tinyworld"])["step"]
        pz.export(run, args.out, {
            "kind": "turbo", "seed": args.seed, "batch": args.batch, "teacher_sha256": teacher_hash, "base_step": base_step,
            "objective": f"step + guidance distillation (Salimans & Ho 2022; Meng et al. 2023): {STEPS} Euler steps, simple schedule, shift 3, cfg 1; teacher {args.substeps} Euler substeps per step at cfg {args.teacher_cfg}",
        })
        pz.plot_loss(args.run / pz.Run.LOG, args.out.with_name(args.out.stem + "_loss.png"), "tiny Z-Image Turbo distillation")
        log.info("exported %s (%.1f MB)", args.out, os.path.getsize(args.out) / 1e6)


if __name__ == "__main__":
    main()
