"""Nothing lost, in-process: the NaN guard keeps the last good weights, damaged or poisoned
files are refused naming them, resume survives a smaller dataset, output names are checked
before training, stale temp files of killed writes are cleaned up.

The trainer runs on a tiny real Z-Image (ComfyUI's own classes), CPU, fp32; the
loop-only cases use a toy model built from trainer_core alone.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import torch
from flowlora.trainer_core import checkpoint, files, losses, optim, timesteps
from flowlora.trainer_core.loop import Batch, NonFiniteLossError, TrainConfig, TrainTask, train
from safetensors import safe_open
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def env(trainer_env):
    return trainer_env


def data(seed=0, count=4, size=16):
    g = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(count, 16, size, size, generator=g)}, [[torch.randn(1, 8, 32, generator=g), {}]]


def settings(**changes):
    from flowlora.trainer_core.lora.config import LoraConfig

    kw = dict(
        timesteps=timesteps.TimestepConfig(timesteps.Uniform(0.2, 0.8)), loss=losses.LossConfig(),
        lora=LoraConfig(preset="zimage_attn", rank=4, alpha=4), optimizer=optim.OptimizerConfig("adamw", 2e-3, max_grad_norm=1.0),
        steps=10, epochs=0, batch_size=2, seed=0, p_text=0.0, p_both=0.0, training_dtype="fp32",
        gradient_checkpointing=False, save_every=0, output_name="guard/a", resume=False,
    )
    kw.update(changes)
    return kw


def lora_step(path) -> int:
    with safe_open(str(path), "pt") as f:
        return int(f.metadata()["flowlora.step"])


# ------------------------------------------------------------------ NaN guard through the node


def test_huge_lr_saves_the_last_good_weights_not_the_diverged_ones(env):
    tiny_models, Trainer, loras = env
    latents, positive = data(1)
    huge = optim.OptimizerConfig("adamw", 1e6, max_grad_norm=1.0)  # when written: loss NaN at step 4, step 2 kept
    with pytest.raises(NonFiniteLossError) as err:
        Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(steps=12, optimizer=huge, output_name="guard/huge"))
    message = str(err.value)
    failed = int(re.search(r"non-finite (?:loss|gradient norm|LoRA weights)\D* (\d+)", message).group(1))
    k = int(re.search(r"saved the last good LoRA \(step (\d+)", message).group(1))
    assert 1 <= k <= failed - 2, message  # the weights that failed are never the ones kept
    path = loras / "guard" / "huge.safetensors"
    assert str(path) in message and "huge.flowlora-state" in message
    kept = load_file(path)
    assert all(torch.isfinite(t).all() for t in kept.values()) and lora_step(path) == k
    state, info = checkpoint.load_state(loras / "guard" / "huge.flowlora-state")
    assert info["step"] == k and info["reason"] == "non-finite" and not checkpoint.non_finite_tensors(state)

    # the kept LoRA is exactly the LoRA of a straight k-step run with the same settings
    _, straight, _, _ = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(steps=k, optimizer=huge, output_name="guard/huge_k")).result
    reference = load_file(straight)
    assert kept.keys() == reference.keys()
    assert max(float((kept[n] - reference[n]).abs().max()) for n in kept) <= 1e-6
    assert any(float(kept[n].abs().max()) > 0 for n in kept if n.endswith("lora_B.weight"))  # it did train


def test_resume_refuses_a_state_with_non_finite_tensors(env):
    tiny_models, Trainer, loras = env
    latents, positive = data(2)
    Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(steps=2, output_name="guard/poison"))
    path = loras / "guard" / "poison.flowlora-state"
    state, info = checkpoint.load_state(path)
    name = next(iter(state["trainable"]))
    state["trainable"][name] = state["trainable"][name].clone()
    state["trainable"][name].view(-1)[0] = float("nan")
    checkpoint.save_state(path, state, info)
    with pytest.raises(checkpoint.StateFileError, match=re.escape(f"cannot resume from {path}: 1 tensor(s) hold NaN or inf (trainable.{name})")):
        Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(steps=4, output_name="guard/poison", resume=True))


def test_damaged_and_truncated_state_files_are_named(env, tmp_path):
    tiny_models, Trainer, loras = env
    latents, positive = data(3)
    Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(steps=2, output_name="guard/cut"))
    path = loras / "guard" / "cut.flowlora-state"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a truncated copy
    with pytest.raises(checkpoint.StateFileError, match=re.escape(f"cannot read the training state {path}")):
        Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **settings(steps=4, output_name="guard/cut", resume=True))
    junk = tmp_path / "junk.flowlora-state"
    junk.write_bytes(b"\x07" * 100)
    with pytest.raises(checkpoint.StateFileError, match=re.escape(str(junk))):
        checkpoint.load_state(junk)


# ------------------------------------------------------------------ NaN guard in the loop alone


LR = 1e21
"""SGD's lr for the toy: ``w``'s gradient is scaled by 1/LR (ordinary steps); ``v``'s exploding
gradient of 1e18 has a finite norm, but the update LR * 1e18 overflows fp32."""


class ToyTrainable:
    """``w`` (4,) is the denoiser's output; ``v`` (4,) feeds nothing, its gradient comes from a hook."""

    def __init__(self):
        self.w = torch.nn.Parameter(torch.zeros(4))
        self.v = torch.nn.Parameter(torch.zeros(4))
        self.explode_at: int | None = None  # step whose gradient of v explodes
        self.step = 1  # the step the next gradient belongs to
        self.w.register_hook(lambda g: g / LR)
        self.v.register_hook(lambda g: torch.full_like(g, 1e18) if self.step == self.explode_at else g)

    def parameters(self):
        return [self.w, self.v]

    def state_dict(self):
        return {"w": self.w.detach(), "v": self.v.detach()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.w.copy_(state["w"])
            self.v.copy_(state["v"])


class ToyData:
    def next_batch(self, batch_size, generator):
        return Batch(torch.randn(batch_size, 1, 2, 2, generator=generator), [None] * batch_size, [f"toy{i}" for i in range(batch_size)])

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def toy_task(tmp_path: Path, trainable: ToyTrainable, steps: int, resume: bool = False) -> TrainTask:
    saved = {}

    def save_lora(step):
        saved[step] = {k: t.clone() for k, t in trainable.state_dict().items()}
        files.save_safetensors(tmp_path / "toy.safetensors", trainable.state_dict(), {"step": str(step)})
        return str(tmp_path / "toy.safetensors")

    def on_update(record):
        trainable.step = record["step"] + 1  # the step the next gradient belongs to

    task = TrainTask(
        denoiser=lambda x, sigma, conds: x * 0 + trainable.w.view(1, 1, 2, 2) + 0 * trainable.v.sum(),
        data=ToyData(), trainable=trainable, timesteps=timesteps.TimestepConfig(timesteps.Uniform(0.2, 0.8)), loss=losses.LossConfig(),
        optimizer=optim.OptimizerConfig("sgd", LR, weight_decay=0.0, max_grad_norm=0.0), config=TrainConfig(steps=steps, batch_size=1),
        save_lora=save_lora, log_path=str(tmp_path / "toy.log.jsonl"), state_path=str(tmp_path / "toy.flowlora-state"), on_update=on_update, resume=resume,
    )
    task.saved = saved
    return task


def test_non_finite_weights_after_an_update_roll_back_to_the_copy_taken_before_it(tmp_path):
    trainable = ToyTrainable()
    trainable.explode_at = 4
    task = toy_task(tmp_path, trainable, steps=8)
    with pytest.raises(NonFiniteLossError, match=r"non-finite LoRA weights after the update of step 4 .*saved the last good LoRA \(step 3"):
        train(task)
    assert list(task.saved) == [3]
    assert torch.isfinite(task.saved[3]["v"]).all() and torch.equal(task.saved[3]["v"], torch.zeros(4))
    state, info = checkpoint.load_state(task.state_path)
    assert info["step"] == 3 and torch.equal(state["trainable"]["w"], task.saved[3]["w"])
    assert [json.loads(line)["step"] for line in Path(task.log_path).read_text().splitlines()] == [1, 2, 3]

    # the kept state resumes into the straight run of the same steps (no explosion this time)
    straight, resumed = ToyTrainable(), ToyTrainable()
    train(toy_task(tmp_path / "s", straight, steps=6))
    train(toy_task(tmp_path, resumed, steps=6, resume=True))
    assert torch.equal(straight.w, resumed.w) and torch.equal(straight.v, resumed.v)


# ------------------------------------------------------------------ smaller dataset on resume


def test_resume_on_a_smaller_dataset_replans_instead_of_index_error(env, caplog):
    tiny_models, Trainer, _ = env
    latents, positive = data(4, count=6)
    kw = settings(steps=2, batch_size=1, output_name="guard/shrink")
    Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **kw)
    small = {"samples": latents["samples"][:2]}
    _, path, run_log, _ = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=small, positive=positive, **{**kw, "steps": 5, "resume": True}).result
    assert lora_step(path) == 5 and [r["step"] for r in run_log.records()] == [1, 2, 3, 4, 5]
    assert {s for r in run_log.records()[2:] for s in r["sources"]} <= {"latent[0]", "latent[1]"}
    assert "the dataset has 2 samples, the saved state planned epoch 1 for 6" in caplog.text


# ------------------------------------------------------------------ output names


def test_output_names_are_checked_before_training(env):
    import folder_paths
    from flowlora.nodes import training

    _, Trainer, loras = env
    ok = "styles/mine"
    assert Trainer.validate_inputs(output_name=ok) is True
    name_max = os.pathconf(loras, "PC_NAME_MAX")
    overhead = len(files.temp_name("x.flowlora-state")) - 1  # the longest file a run writes, less the name
    longest_ok = "n" * (name_max - overhead)
    assert Trainer.validate_inputs(output_name=longest_ok) is True
    for bad, why in [
        ("n" * (name_max - overhead + 1), "too long for this file system"),
        ("a" * (name_max + 1) + "/b", "too long for this file system"),
        ("bad\x00name", "contains '\\x00'"),
        ("two\nlines", "contains '\\n'"),
        ("tab\there", "contains '\\t'"),
        ("what?", "contains '?'"),
        ("CON", "device name on Windows"),
        ("styles/lpt1.v2", "device name on Windows"),
        ("nul/x", "device name on Windows"),
        ("styles./x", "ends in a dot or space"),
        ("styles /x", "ends in a dot or space"),
        ("../escape", "relative name inside models/loras"),
    ]:
        message = Trainer.validate_inputs(output_name=bad)
        assert isinstance(message, str) and message.startswith(f"output_name = {bad!r}") and why in message, (bad, message)
    deep = "d/" * (os.pathconf(loras, "PC_PATH_MAX") // 2) + "x"
    assert "too long" in Trainer.validate_inputs(output_name=deep)
    assert training.lora_output_path(" styles/mine.safetensors ") == os.path.join(folder_paths.get_folder_paths("loras")[0], "styles", "mine.safetensors")


def test_an_existing_lora_is_refused_unless_resume_or_overwrite(env):
    tiny_models, Trainer, loras = env
    latents, positive = data(5)
    kw = settings(steps=1, output_name="guard/taken")
    Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **kw)
    first = load_file(loras / "guard" / "taken.safetensors")
    taken = str(loras / "guard" / "taken.safetensors")
    message = Trainer.validate_inputs(output_name="guard/taken")
    assert message == f"output_name = 'guard/taken': {taken} already exists (from another run); turn on resume to continue it, overwrite to replace it, or choose another name"
    assert Trainer.validate_inputs(output_name="guard/taken", resume=True) is True
    assert Trainer.validate_inputs(output_name="guard/taken", overwrite=True) is True
    # a second prompt that passed validation before the first wrote its files is refused when it runs
    with pytest.raises(ValueError, match="already exists"):
        Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **{**kw, "seed": 1})
    assert all(torch.equal(first[k], v) for k, v in load_file(taken).items())
    _, _, _, _ = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **{**kw, "seed": 1, "overwrite": True}).result
    assert any(not torch.equal(first[k], v) for k, v in load_file(taken).items())


# ------------------------------------------------------------------ stale temp files


def test_stale_temp_files_of_killed_writes_are_removed_at_the_next_write(tmp_path):
    old = time.time() - 2 * files.STALE_AFTER_S
    stale = tmp_path / ".a.safetensors.flowlora-abc_1234.tmp"  # what a killed save of a.safetensors leaves
    fresh = tmp_path / ".b.safetensors.flowlora-zz99zz99.tmp"  # a write that may still be running
    foreign = tmp_path / ".c.safetensors.abcd1234.tmp"  # not the pack's pattern
    for p in (stale, fresh, foreign):
        p.write_bytes(b"partial")
    os.utime(stale, (old, old))
    os.utime(foreign, (old, old))
    link = tmp_path / ".d.safetensors.flowlora-linkxxxx.tmp"
    link.symlink_to(foreign)
    os.utime(link, (old, old), follow_symlinks=False)

    files.write_json(tmp_path / "other.json", {"x": 1})  # any write to the folder
    assert not stale.exists()
    assert fresh.exists() and foreign.exists() and link.is_symlink()
    assert json.loads((tmp_path / "other.json").read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, foreign.name, link.name, "other.json"])
