"""The ablation table builder (scripts/tinyworld/ablation.py, issue 13) on a small fixture.

Every number in docs/ABLATION.md comes from the metrics files the runs write;
this checks that the builder averages seeds, states their spread, leaves smoke
runs out, and gives each claim the verdict its numbers support. The smoke-size
run of one row through the live server is ``test_ablation_smoke``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "tinyworld"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import ablation


def write(results: Path, row: str, seed: int, smoke: bool = False, **metrics) -> None:
    folder = results / row / f"seed{seed}"
    folder.mkdir(parents=True)
    record = {"row": row, "study": ablation.ROWS[row].study, "seed": seed, "smoke": smoke, "date": "2026-12-01", "commit": "abc1234", "machine": "test machine",
              "content_base": 0.5, "x0_mse_base": 0.05, "steps": 300, "batch": 4, "prompts": 48, "drift_base": 0.002, "wall_s": 10.0, **metrics}
    (folder / "metrics.json").write_text(json.dumps(record))


@pytest.fixture
def results(tmp_path):
    for seed, (style, drift) in enumerate([(0.70, 0.0010), (0.74, 0.0012), (0.72, 0.0011)]):
        write(tmp_path, "turbo_acrf", seed, style_score=style, content=0.60, x0_mse=0.030, drift=drift)
    for seed, (style, drift) in enumerate([(0.80, 0.0030), (0.84, 0.0034), (0.82, 0.0032)]):
        write(tmp_path, "turbo_plain", seed, style_score=style, content=0.58, x0_mse=0.031, drift=drift)
    write(tmp_path, "turbo_plain", 9, smoke=True, style_score=99.0, content=0.0, x0_mse=9.0, drift=9.0)  # left out
    for seed, mse in enumerate([0.040, 0.041]):
        write(tmp_path, "u1_baseline", seed, style_score=0.5, content=0.2, x0_mse=mse)
        write(tmp_path, "u1_a_velocity", seed, style_score=0.5, content=0.2, x0_mse=mse + 0.010)
    return tmp_path


def test_rows_are_averaged_over_seeds_with_their_spread(results):
    table = ablation.build_table(results)
    acrf = next(line for line in table.splitlines() if line.startswith("| AC-RF (report recipe)"))
    assert "0.72 ± 0.02" in acrf  # style: mean 0.72, sample std 0.02
    assert "60.0 ± 0.0" in acrf  # content in percent
    assert "11.0 ± 1.0" in acrf  # drift, in units of 1e-4
    plain = next(line for line in table.splitlines() if line.startswith("| plain LoRA"))
    assert "0.82 ± 0.02" in plain and "99" not in plain  # the smoke run is not in the mean
    assert "Measured 2026-12-01 at commit `abc1234` on test machine: turbo_acrf, turbo_plain, u1_a_velocity, u1_baseline." in table
    assert "Base model without a LoRA: content 50.0%, held-out x0-MSE 0.0500, 8-step drift 20.0e-4" in table


def test_each_claim_gets_the_verdict_its_numbers_support(results):
    table = ablation.build_table(results)
    claims = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| AC-RF:") or line.startswith("| U1 report")}
    # AC-RF drifts less than the plain LoRA by far more than the seeds' spread: the claim holds
    assert claims["AC-RF: keeps the Turbo's few-step sampling closer than a plain LoRA"].endswith("| holds |")
    # it learns less style than the plain LoRA (0.72 vs 0.82): "at least as well" does not hold
    assert claims["AC-RF: learns the style at least as well as a plain LoRA"].endswith("| does not hold |")
    # velocity loss: x0-MSE 0.010 higher, spread 0.0007: the report's "degrades" holds
    assert claims["U1 report (i): the velocity loss degrades reconstruction"].endswith("| holds |")
    # rows without data are left out, not guessed
    assert "Min-SNR" not in table and "logit-normal" not in table


def test_verdict_within_the_spread_is_inconclusive():
    assert ablation.verdict(0.001, 0.002, "lower", "better").startswith("inconclusive")
    assert ablation.verdict(-0.01, 0.002, "lower", "better") == "holds"
    assert ablation.verdict(0.01, 0.002, "lower", "better") == "does not hold"
    assert ablation.verdict(0.01, 0.002, "lower", "worse") == "holds"
    assert ablation.verdict(0.01, 0.0, "lower", "worse", seeds=1) == "inconclusive (one seed)"


def test_the_doc_keeps_its_prose_and_replaces_only_the_table(results, tmp_path):
    doc = tmp_path / "ABLATION.md"
    doc.write_text(f"# Ablation\n\nprose before\n\n{ablation.TABLE_BEGIN}\nold table\n{ablation.TABLE_END}\n\nprose after\n")
    ablation.write_doc(results, doc)
    text = doc.read_text()
    assert "prose before" in text and "prose after" in text and "old table" not in text
    assert text.count(ablation.TABLE_BEGIN) == 1 and "| AC-RF (report recipe) |" in text


def test_rows_are_named_clearly():
    assert [r.name for r in ablation.select(["u1"])] == ["u1_baseline", "u1_a_velocity", "u1_b_logit_normal", "u1_c_dropout", "u1_d_all", "u1_demo"]
    assert len(ablation.select(["all", "turbo_acrf"])) == len([r for r in ablation.ROWS.values() if not r.exploratory])
    assert ablation.select(["turbo_acrf_ffn"])[0].exploratory and ablation.ROWS["turbo_acrf_ffn"] not in ablation.STUDIES["turbo"]
    with pytest.raises(ValueError, match="row 'nope'"):
        ablation.select(["nope"])


@pytest.mark.server
@pytest.mark.slow
def test_ablation_smoke(comfy_root, tmp_path):
    """One row at smoke size through the live server, measured in-process: the command keeps working."""
    (path,) = ablation.run_rows([ablation.ROWS["turbo_acrf"]], [0], tmp_path, smoke=True)
    record = json.loads(path.read_text())
    assert record["smoke"] and record["steps"] == ablation.TURBO_SCALE.smoke_steps and record["prompts"] == 2
    for key in ("style_score", "content", "content_base", "x0_mse", "x0_mse_base", "drift", "drift_base", "wall_s", "final_loss"):
        assert isinstance(record[key], float) and record[key] == record[key], key  # a number, not NaN
    assert 0.0 <= record["content"] <= 1.0 and record["x0_mse"] > 0
    assert (path.parent / "log.jsonl").is_file() and (path.parent / "samples.png").is_file()
    assert ablation.build_table(tmp_path).count("| AC-RF") == 0  # smoke runs never reach the table


def test_curve_smoke_measures_every_kept_save_on_validation_prompts(comfy_root, tmp_path):
    """``curve`` at smoke size through the live server: one record per periodic save, measured on prompts the table never uses."""
    path = ablation.curve(ablation.ROWS["turbo_acrf"], 0, 1, tmp_path, smoke=True)
    record = json.loads(path.read_text())
    assert path.name == "turbo_acrf_seed0_smoke.json" and record["smoke"] and record["first_prompt"] == ablation.VALIDATION_FIRST
    assert [p["step"] for p in record["points"]] == [1, 2, 3]
    assert len({p["content_base"] for p in record["points"]}) == 1  # one base, measured once
    assert all(0.0 <= p["content"] <= 1.0 and p["x0_mse"] > 0 for p in record["points"])
    validation = set(ablation.heldout(ablation.TURBO_SCALE.prompts, ablation.VALIDATION_FIRST)[0])
    assert not validation & set(ablation.heldout(ablation.TURBO_SCALE.prompts)[0])
    assert "| 3 |" in ablation.curve_table(record)


def test_curve_refuses_a_save_interval_that_does_not_divide_the_run(tmp_path):
    with pytest.raises(ValueError, match="--every 7"):
        ablation.curve(ablation.ROWS["turbo_acrf"], 0, 7, tmp_path)


def test_strength_table_lists_each_seed_s_drop_beside_the_mean(tmp_path):
    """Several seeds' curves of one row: the last save per strength, mean style and drop, and each seed's drop."""
    def record(seed: int, drops: dict[float, float]) -> dict:
        points = [{"step": 100, "strength": 1.0, "style_score": 0.9, "content": 0.5, "content_base": 0.6, "x0_mse": 0.01}]
        points += [{"step": 200, "strength": s, "style_score": s, "content": 0.6 - d / 100, "content_base": 0.6, "x0_mse": 0.01} for s, d in drops.items()]
        return {"row": "turbo_acrf", "label": "AC-RF", "seed": seed, "steps": 200, "every": 100, "prompts": 48, "first_prompt": 100,
                "date": "2026-12-06", "commit": "abc1234", "points": points}

    records = [record(0, {0.6: 3.0, 0.7: 4.0, 0.8: 5.0}), record(1, {0.6: 4.0, 0.7: 6.0})]
    table = ablation.strength_table(records)
    assert table.startswith("`turbo_acrf` over seeds 0, 1: the last save (update 200)")
    rows = [line for line in table.splitlines() if line.startswith("| 0") or line.startswith("| 1")]
    assert rows == ["| 0.7 | 0.70 | 5.0 | 4.0, 6.0 |", "| 0.6 | 0.60 | 3.5 | 3.0, 4.0 |"]  # 0.8: one seed only; 1: not the last save
    (tmp_path / "curves").mkdir()
    for r in records:
        (tmp_path / "curves" / f"turbo_acrf_seed{r['seed']}.json").write_text(json.dumps(r))
    assert table in ablation.build_table(tmp_path)
