"""Every benchmark runs at ``--tiny`` size and prints its table and one ``BENCH {json}`` line.

The numbers of a tiny run mean nothing and are not checked; what must hold at any size is: the
report is complete, and cnnforge's trainer reaches weights ``torch.equal`` to the plain loop's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def bench(name: str, *args: str, timeout: float = 900) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--tiny", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    assert len(lines) == 1, proc.stdout[-3000:]
    result = json.loads(lines[0].removeprefix("BENCH "))
    assert result["tiny"] is True and result["machine"]["python"]
    assert "(tiny: numbers mean nothing)" in proc.stdout  # the table's title
    return result


def test_trainer_overhead_gives_the_plain_loops_weights() -> None:
    r = bench("trainer_overhead")
    assert r["weights_equal"] is True
    assert r["processes"] == 1 and r["throughput_ratio"] > 0
    assert set(r["samples_per_s"]) == {"plain", "cnnforge"}


def test_trainer_overhead_light_step_reports_overhead_and_fixed_cost() -> None:
    r = bench("trainer_overhead", "--light", "--callback")  # cnnforge with an epoch-level callback (issue 29)
    assert r["epoch_callback"] is True
    assert r["weights_equal"] is True and r["steps_per_epoch"] > 0
    assert {"plain", "cnnforge"} <= set(r) and r["cnnforge"]["cpu_s"] > 0
    assert r["end_to_end_vs_plain"] == pytest.approx(r["plain"]["cpu_s"] / r["cnnforge"]["cpu_s"])  # one round
    assert r["host_ms_per_step"] == r["host_ms_per_step_rounds"][0]  # the near-free model's line, measured


def test_on_device_matches_the_loaders_weights() -> None:
    r = bench("on_device")
    assert all(m["weights_equal"] is True and m["speedup"] > 0 for m in r["models"].values())


@pytest.mark.slow
def test_trainer_overhead_ddp_gives_the_plain_ddp_weights() -> None:
    r = bench("trainer_overhead", "--ddp")
    assert r["weights_equal"] is True and r["processes"] == 2


def test_augment_throughput_times_the_three_pipelines() -> None:
    r = bench("augment_throughput")
    assert set(r["images_per_s"]) == {"seed_torchvision", "cnnforge_sample", "cnnforge_batch"}
    assert all(v > 0 for v in r["images_per_s"].values())
    rate = r["images_per_s"]
    assert r["ratio_batch_vs_seed"] == pytest.approx(rate["cnnforge_batch"] / rate["seed_torchvision"])


def test_data_wait_reports_the_share_of_step_time() -> None:
    r = bench("data_wait")
    assert 0 <= r["data_wait_fraction"] <= 1 and r["num_workers"] >= 0


def test_speed_knobs_measure_each_variant() -> None:
    r = bench("speed_knobs")
    speedup = r["models"]["convnet"]["speedup"]
    assert speedup["fp32"] == 1.0 and {"channels_last", "bf16", "no_mkldnn"} <= set(speedup)


def test_startup_reports_heavy_imports() -> None:
    r = bench("startup")
    commands = r["commands"]
    assert commands["cnnforge --help"]["heavy"] == []
    assert commands["python -c 'import torch'"]["heavy"] == ["torch"]


def test_imbalance_compares_the_balance_modes_and_an_early_stop() -> None:
    r = bench("imbalance")
    assert set(r["imbalance"]) == {"none", "loss", "sampler"} and set(r["early_stop"]) == {"full", "early_stop"}
    counts = r["train_counts_skewed"]
    assert min(counts[str(d)] for d in range(5)) > 3 * max(counts[str(d)] for d in range(5, 10))
    assert (r["early_stop"]["full"]["epochs"], r["early_stop"]["full"]["stopped"]) == (r["stop_epochs"], "epochs")


def test_tricks_measures_each_trick_against_the_baseline() -> None:
    r = bench("tricks")
    assert set(r["variants"]) == {"baseline", "lookahead", "whiten_init", "bias_lr_mult", "tta_flip", "all"}
    assert all(0.0 <= v["test_acc"] <= 1.0 and v["train_s"] > 0 for v in r["variants"].values())
    assert len(r["variants"]["all"]["overrides"]) == 4


def test_gpu_suite_runs_end_to_end_on_the_cpu() -> None:
    """benchmarks/gpu_suite.sh --device cpu --tiny: one table and one BENCH line on stdout, every section in it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--device", "cpu", "--tiny"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "gpu_suite (tiny: numbers mean nothing)"
    assert lines[1].split()[:3] == ["section", "case", "samples/s"]
    assert lines[-1].startswith("BENCH ") and not any(line.startswith("BENCH ") for line in lines[:-1])
    assert {line.split()[0] for line in lines[2:-1]} == {"overhead", "knobs", "cifar_fast"}  # no DDP on one device
    r = json.loads(lines[-1].removeprefix("BENCH "))
    sections = r["sections"]
    assert r["device"] == "cpu" and r["tiny"] is True
    assert set(sections["overhead"]) == {"lenet fp32", "lenet bf16"}
    assert sections["overhead"]["lenet fp32"]["weights_equal"] is True  # the same computation, bit for bit
    assert set(sections["knobs"]["convnet"]["samples_per_s"]) == {"fp32", "channels_last"}
    assert sections["cifar_fast"]["samples_per_s"] > 0 and "skipped" in sections["ddp"]


def test_cifar_fast_recipe_trains_on_the_cpu() -> None:
    r = bench("cifar_fast")
    assert r["cifar10"] is False and r["reached_94"] is False  # synthetic data: a correctness run only
    assert 0.0 <= r["mean_test_acc"] <= 1.0 and r["mean_train_s"] > 0


@pytest.mark.slow
def test_sweep_overhead_compares_wall_time_with_the_ideal() -> None:
    r = bench("sweep_overhead")
    assert r["trials"] == 2 and r["failed"] == 0 and r["with_trial_plots"]["trials"] == 2
    assert r["overhead_ratio"] == pytest.approx(r["wall_s"] / r["ideal_s"])


@pytest.mark.slow
def test_search_quality_runs_each_searcher() -> None:
    r = bench("search_quality")
    assert {name: sum(run["trials"] for run in runs) for name, runs in r["runs"].items()} == {
        "grid 36": 2, "random 12": 2, "optuna TPE 12": 2}
    assert all(0.0 <= value <= 1.0 for value in r["mean_best_val_acc"].values())


@pytest.mark.slow
def test_data_scale_measures_memory_throughput_startup_and_wait() -> None:
    r = bench("data_scale")
    for case in ("none", "disk", "webdataset", "webdataset, 2 DDP ranks, per rank"):
        m = r["memory"][case]
        assert m["small_pss_mib"] > 0 and m["large_pss_mib"] > 0
        growth = m["large_pss_mib"] - m["small_pss_mib"]
        assert m["growth_ratio"] == pytest.approx(growth / r["memory"]["decoded_growth_mib"])
    ddp = r["memory"]["webdataset, 2 DDP ranks, per rank"]
    assert len(ddp["small_rank_pss_mib"]) == 2
    assert ddp["small_pss_mib"] == pytest.approx(sum(ddp["small_rank_pss_mib"]) / 2)
    rate = r["throughput"]["images_per_s_per_worker"]
    assert r["throughput"]["ratio"] == pytest.approx(rate["cnnforge"] / rate["torchvision"])
    assert r["startup"]["ratio"] == pytest.approx(r["startup"]["first_s"] / r["startup"]["second_s"])
    assert 0 <= r["data_wait"]["fraction"] <= 1


def test_distill_compares_the_taught_student_with_the_student_alone() -> None:
    r = bench("distill")
    assert set(r["test_acc_per_seed"]) == {"student alone", "student + distill"}
    assert all(0.0 <= acc <= 1.0 for accs in r["test_acc_per_seed"].values() for acc in accs)


def test_augment_policies_compares_the_policies_with_the_op_list() -> None:
    r = bench("augment_policies", "--workers", "0")
    assert set(r["variants"]) == {"ops", "trivial_augment", "rand_augment", "rand_augment+cutmix"}
    assert all(0.0 <= v["mean"] <= 1.0 and len(v["test_acc_per_seed"]) == 1 for v in r["variants"].values())


@pytest.mark.slow
def test_suite_cost_reports_cpu_seconds_per_test_and_per_cli_call() -> None:
    r = bench("suite_cost")
    assert r["tests"] > 0 and r["cpu_s"] == pytest.approx(sum(r["files"].values()))
    assert list(r["files"]) == ["tests/test_step_log.py"]
    assert set(r["cli_call_cpu_s"]) == {"subprocess", "in_process"} and r["cli_call_ratio"] > 0
