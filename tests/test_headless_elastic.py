"""Killed ranks, torchrun's elastic restart and a two-node rendezvous, for real (README "Headless and
multi-GPU training"): torchrun from the test's Python, two gloo ranks on the CPU, one thread each,
the shipped ``workflows/demo_tiny.json`` through the headless runner.

A rank is killed from outside with SIGKILL: the test waits until the run has kept its periodic save
of step 6 (``<output_name>/steps/step_000006.safetensors``), finds the worker processes among the
torchrun process's children by the ``RANK`` in their environment, and kills one. No test hook in
the code under test.

Every run is compared with one straight single process with the global batch (4) and a save after
every step, whose kept saves give the straight run's LoRA at any step. Test-only changes, stated:
30 steps instead of 40, fp32, periodic saves every 3 steps (the reference: every step).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import harness
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from test_headless import ENV, RUNNER, TRAINER, WORKFLOW, assert_same_lora, demo_base, runner_base_args

pytestmark = [pytest.mark.slow]

STEPS, EVERY, KILL_AFTER = 30, 3, 6


@pytest.fixture(scope="module")
def base(tmp_path_factory, comfy_root) -> Path:
    return demo_base(tmp_path_factory.mktemp("elastic-base"))


def runner_args(base: Path, name: str, *, batch: int, every: int = EVERY, workflow: Path = WORKFLOW) -> list[str]:
    sets = {"steps": STEPS, "save_every": every, "training_dtype": "fp32", "batch_size": batch, "output_name": f"elastic/{name}"}
    return [*runner_base_args(base, workflow), *[a for key, value in sets.items() for a in ("--set", f"{TRAINER}.{key}={json.dumps(value)}")]]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def two_ranks(max_restarts: int) -> list[str]:
    return torchrun("--nproc-per-node", "2", "--max-restarts", str(max_restarts), "--master-addr", "127.0.0.1", "--master-port", str(harness.free_port()), str(RUNNER))


class Job:
    """A command in its own session, its output in a file (a pipe nobody reads could fill up and block it)."""

    def __init__(self, cmd: list[str], log: Path, cwd: Path = harness.REPO):
        self.cmd, self.log = cmd, log
        self.out = open(log, "w")  # closed in wait()
        self.process = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT, env=ENV, cwd=cwd, start_new_session=True)

    def wait(self, timeout: float = 300) -> tuple[int, str]:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"{shlex.join(self.cmd)} ran past {timeout} s:\n{self.log.read_text()[-6000:]}")
        finally:
            self.out.close()
        return code, self.log.read_text()

    def workers(self) -> dict[int, int]:
        """``{rank: pid}`` of torchrun's worker processes (its children with ``RANK`` in their environment)."""
        found = {}
        for children in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            for pid in map(int, children.read_text().split()):
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except (FileNotFoundError, ProcessLookupError):
                    continue
                env = dict(item.decode(errors="replace").split("=", 1) for item in environ if b"=" in item)
                if "RANK" in env:
                    found[int(env["RANK"])] = pid
        return found

    def wait_for(self, path: Path, timeout: float = 240) -> None:
        """Until ``path`` exists (a kept save: the run goes on to later steps)."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert self.process.poll() is None, f"the run ended before writing {path}:\n{self.log.read_text()[-6000:]}"
            assert time.monotonic() < deadline, f"no {path} after {timeout} s:\n{self.log.read_text()[-6000:]}"
            time.sleep(0.005)

    def kill_rank_after(self, kept_save: Path, rank: int) -> None:
        """SIGKILL rank ``rank`` as soon as ``kept_save`` exists (mid-training)."""
        self.wait_for(kept_save)
        os.kill(self.workers()[rank], signal.SIGKILL)


def loras(base: Path) -> Path:
    return base / "models" / "loras" / "elastic"


def lora(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def records(base: Path, name: str) -> list[dict]:
    lines = (loras(base) / f"{name}.log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def kept(base: Path, name: str, step: int) -> Path:
    return loras(base) / name / "steps" / f"step_{step:06d}.safetensors"


def assert_same_log(a: list[dict], b: list[dict]) -> None:
    """Same steps, samples and draws; loss means equal to float rounding."""
    assert [(r["step"], r["sources"], r["route"]) for r in a] == [(r["step"], r["sources"], r["route"]) for r in b]
    for x, y in zip(a, b, strict=True):
        assert x["sigma"] == pytest.approx(y["sigma"], abs=1e-7)
        for key in ("loss", "x0_mse", "v_mse"):
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-7), (x["step"], key)


def assert_equals_straight(base: Path, name: str, straight: str) -> None:
    assert_same_lora(lora(loras(base) / f"{name}.safetensors"), lora(loras(base) / f"{straight}.safetensors"))
    assert_same_log(records(base, name), records(base, straight))
    assert len(records(base, name)) == STEPS


@pytest.fixture(scope="module")
def straight(base, tmp_path_factory) -> str:
    """The straight run: one process, global batch 4, a kept save after every step."""
    log = tmp_path_factory.mktemp("straight") / "out.txt"
    code, out = Job([sys.executable, str(RUNNER), *runner_args(base, "straight", batch=4, every=1)], log).wait()
    assert code == 0 and f"finished at step {STEPS}/{STEPS}" in out, out[-6000:]
    assert max(float(v.abs().max()) for k, v in lora(loras(base) / "straight.safetensors").items() if k.endswith("lora_B.weight")) > 1e-4  # it trained
    return "straight"


def test_killed_rank_0_elastic_restart_resumes_from_the_last_good_state(base, straight, tmp_path):
    """SIGKILL rank 0 (the rank that writes) mid-training under ``--max-restarts 1``: torchrun stops
    rank 1, restarts both, the runner resumes from the last periodic save (rank 0 died without a
    stop save), recomputes the lost steps from the saved streams, and the job succeeds with the
    straight run's LoRA and log. The kept saves recomputed after the restart equal the straight
    run's at the same steps."""
    job = Job([*two_ranks(max_restarts=1), *runner_args(base, "restarted", batch=2)], tmp_path / "out.txt")
    job.kill_rank_after(kept(base, "restarted", KILL_AFTER), rank=0)
    code, out = job.wait()
    assert code == 0, out[-6000:]
    assert "failed (exitcode: -9) local_rank: 0" in out and "elastic restart 1: resuming" in out, out[-6000:]
    starts = [int(s) for s in re.findall(rf"training steps (\d+)-{STEPS}", out)]
    assert len(starts) == 2 and starts[0] == 1, out[-6000:]
    resumed = starts[1] - 1
    assert KILL_AFTER <= resumed < STEPS and resumed % EVERY == 0, f"resumed at step {resumed}"  # a periodic save, not step 0
    assert f"finished at step {STEPS}/{STEPS}" in out

    assert_equals_straight(base, "restarted", straight)
    for step in range(EVERY, STEPS, EVERY):
        assert_same_lora(lora(kept(base, "restarted", step)), lora(kept(base, straight, step)))


def test_killed_rank_1_without_restarts_fails_with_the_last_good_files(base, straight, tmp_path):
    """SIGKILL rank 1 mid-training under ``--max-restarts 0``: the job fails, torchrun names the killed
    rank, rank 0 saves the last completed step and says where to continue; the LoRA and state on
    disk are a matched, loadable pair (no temporary files left) equal to the straight run at that
    step, and ``--resume`` on 2 ranks finishes with the straight run's LoRA and log."""
    from flowlora.trainer_core import checkpoint, files

    job = Job([*two_ranks(max_restarts=0), *runner_args(base, "lost", batch=2)], tmp_path / "out.txt")
    job.kill_rank_after(kept(base, "lost", KILL_AFTER), rank=1)
    code, out = job.wait()
    assert code != 0, out[-6000:]
    assert "ChildFailedError" in out and "Signal 9 (SIGKILL)" in out, out[-6000:]
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)\s*\n\s*exitcode\s*: -9", out), out[-6000:]  # torchrun's root cause: rank 1
    # rank 0 reports what stopped it (the lost peer's error, or torchrun's SIGTERM as a Cancel), not a
    # KeyboardInterrupt raised into ComfyUI's error report or an empty message
    assert re.search(r"flowlora\.run \(rank 0 of 2\): .*(failed: [\w.]+: \S|interrupted in node \d+)", out), out[-6000:]
    assert "KeyboardInterrupt" not in out and "without a message" not in out, out[-6000:]
    said = re.search(r"flowlora\.run: .*: the last good LoRA and resumable state are those of step (\d+) \((stopped|periodic)\); --resume continues", out)
    assert said, out[-6000:]
    step = int(said[1])
    assert KILL_AFTER <= step < STEPS

    folder = loras(base)
    state, info = checkpoint.load_state(folder / "lost.flowlora-state")
    assert state["step"] == info["step"] == step and info["reason"] == said[2]  # "stopped" (rank 0 saved after losing its peer) or "periodic" (lost at the barrier after that save)
    with safe_open(str(folder / "lost.safetensors"), "pt") as f:
        assert f.metadata()["flowlora.step"] == str(step)
    assert_same_lora(lora(folder / "lost.safetensors"), lora(kept(base, straight, step)))
    assert not [p.name for p in folder.rglob("*") if files.TEMP_PATTERN.fullmatch(p.name)]

    job = Job([*two_ranks(max_restarts=0), *runner_args(base, "lost", batch=2), "--resume"], tmp_path / "resumed.txt")
    code, out = job.wait()
    assert code == 0 and f"training steps {step + 1}-{STEPS}" in out, out[-6000:]
    assert_equals_straight(base, "lost", straight)


def readme_two_node_command() -> list[str]:
    """The README's two-machine torchrun command, as tokens."""
    text = (harness.REPO / "README.md").read_text(encoding="utf-8")
    command = re.search(r"Two machines.*?```bash\n(torchrun --nnodes 2 .*?)\n```", text, re.S)
    assert command, "README: no two-machine torchrun example"
    return shlex.split(command[1].replace("\\\n", " "))


def test_two_nodes_by_torchruns_rendezvous_equal_one_process(base, straight, tmp_path):
    """Two "nodes" on this machine: the README's two-machine command run twice, each torchrun with
    one rank (``--nproc-per-node 1``), meeting through the c10d rendezvous on 127.0.0.1; the run
    equals the single process with the global batch. ``-m flowlora.run`` from a folder holding the
    pack as ``flowlora``, as the README runs it."""
    tokens = readme_two_node_command()
    flags = dict(zip(tokens[1:tokens.index("-m")][::2], tokens[2:tokens.index("-m")][::2], strict=True))
    assert flags.keys() == {"--nnodes", "--nproc-per-node", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id", "--max-restarts"}, tokens
    assert flags["--nnodes"] == "2" and flags["--rdzv-backend"] == "c10d" and tokens[tokens.index("-m") + 1] == "flowlora.run", tokens
    flags |= {"--nproc-per-node": "1", "--rdzv-endpoint": f"127.0.0.1:{harness.free_port()}", "--rdzv-id": f"flowlora-test-{os.getpid()}"}
    custom_nodes = tmp_path / "nodes"
    custom_nodes.mkdir()
    (custom_nodes / "flowlora").symlink_to(harness.REPO, target_is_directory=True)
    cmd = torchrun(*[a for item in flags.items() for a in item], "-m", "flowlora.run", *runner_args(base, "two_nodes", batch=2))
    jobs = [Job(cmd, tmp_path / f"node{node}.txt", cwd=custom_nodes) for node in range(2)]
    results = [job.wait() for job in jobs]
    out = "\n".join(text for _, text in results)
    assert [code for code, _ in results] == [0, 0], out[-8000:]
    assert out.count("2 ranks (gloo)") == 1 and f"finished at step {STEPS}/{STEPS}" in out, out[-8000:]  # one rank 0, two nodes
    assert_equals_straight(base, "two_nodes", straight)


def test_sigterm_stops_a_run_like_comfyuis_cancel(base, straight, tmp_path):
    """SIGTERM (what torchrun sends the surviving ranks, and SLURM or ``kill`` a job) to a single
    process mid-training: the runner stops it as ComfyUI's Cancel does, saving the last completed
    step, and exits with 130; the files equal the straight run at that step."""
    from flowlora.trainer_core import checkpoint

    job = Job([sys.executable, str(RUNNER), *runner_args(base, "terminated", batch=4)], tmp_path / "out.txt")
    job.wait_for(kept(base, "terminated", KILL_AFTER))
    os.kill(job.process.pid, signal.SIGTERM)
    code, out = job.wait()
    assert code == 130 and "interrupted in node" in out and "KeyboardInterrupt" not in out, out[-6000:]
    said = re.search(rf"stopped at step (\d+)/{STEPS}: LoRA .*terminated\.safetensors", out)
    assert said, out[-6000:]
    step = int(said[1])
    state, info = checkpoint.load_state(loras(base) / "terminated.flowlora-state")
    assert KILL_AFTER <= step == state["step"] < STEPS and info["reason"] == "stopped"
    assert_same_lora(lora(loras(base) / "terminated.safetensors"), lora(kept(base, straight, step)))
