"""Smoke test of the benchmark scripts: they run and print their figures.

Nothing about speed is asserted: the figures depend on the machine.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / script), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"{script} {' '.join(args)} exited with {result.returncode}.\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.mark.large  # ~25 s: kept out of the default suite's budget
def test_sharing_cost_quick_prints_a_ratio_per_number_of_tasks():
    out = run_benchmark("sharing_cost.py", "--quick")
    assert "tensorflow" in out and "CPUs:" in out, out
    for num_tasks in (2, 3, 5):
        line = re.search(rf"^T={num_tasks}: .*\| ratio (\d+\.\d+) ", out, re.MULTILINE)
        assert line, f"no ratio line for T={num_tasks} in:\n{out}"
        assert float(line.group(1)) > 0
    assert re.search(r"^verdict: T=3 ratio \d+\.\d+ vs target <= 0\.45", out, re.M), out


@pytest.mark.large
def test_tagging_quick_prints_the_comparison_table():
    out = run_benchmark("tagging.py", "--quick")
    for label in ("multi-task", "POS only", "NER only"):
        assert re.search(rf"^{label}\s+\S+\s+\S+\s+\d+\s+\d+\s+[\d.]+$", out, re.M), out
    assert re.search(r"^step time ratio .* = \d+\.\d+$", out, re.M), out
    assert out.rstrip().splitlines()[-1].startswith("verdict: UPOS"), out


@pytest.mark.large
def test_tagging_speed_quick_prints_the_speed_up_and_checks_the_tags():
    out = run_benchmark("tagging_speed.py", "--quick")
    assert re.search(r"^same tags on \d+ dev sentences: True$", out, re.M), out
    assert re.search(r"^  speed-up current / baseline: \d+\.\d+x$", out, re.M), out
    assert len(re.findall(r"^padding share, (baseline|current) buckets .*: \d+\.\d%$",
                          out, re.M)) == 2, out


@pytest.mark.large
def test_tagging_methods_quick_prints_a_delta_m_row_per_method(tmp_path):
    runs = str(tmp_path / "runs.json")
    out = run_benchmark("tagging_methods.py", "--quick", "--methods", "equal", "--json", runs)
    assert "resumed" not in out, out
    # A second run keeps the file's models and trains only the new method.
    out = run_benchmark("tagging_methods.py", "--quick", "--methods", "equal,pcgrad",
                        "--json", runs, "--resume")
    assert re.search(r"^resumed: pos only x1, ner only x1, equal x1$", out, re.M), out
    assert "equal (seed 0)" not in out and "pcgrad (seed 0)" in out, out
    report = run_benchmark("tagging_methods.py", "--report", runs)
    for text in (out, report):
        for label in ("pos only", "ner only"):
            assert re.search(rf"^\| {label} \| 1 \| .* \| – \| \d+ \|$", text, re.M), text
        for method in ("equal", "pcgrad"):
            assert re.search(rf"^\| {method} \| 1 \| \d+\.\d\d \| \d+\.\d\d \| "
                             r"[+-]\d+\.\d\d% \| \d+ \|$", text, re.M), text
    # Other settings are refused, not mixed in.
    with pytest.raises(AssertionError, match="epochs 2 \\(asked: 1\\)"):
        run_benchmark("tagging_methods.py", "--quick", "--epochs", "1", "--json", runs,
                      "--resume")


@pytest.mark.large
def test_vision_smoke_prints_the_comparison_table():
    out = run_benchmark("vision.py", "--smoke")
    assert re.search(r"^Δm \(multi-task vs single-task.*= [+-]\d+\.\d+%$", out, re.M), out
    assert re.search(r"^step time ratio multi-task .* = \d+\.\d+", out, re.M), out
    assert re.search(r"^verdict: mAP@\.50", out, re.M), out


@pytest.mark.large
def test_balancers_quick_prints_the_ratio_table_and_quality():
    out = run_benchmark("balancers.py", "--quick")
    assert re.search(r"^pcgrad\s+\d+\.\d+", out, re.M), out
    assert "== quality" in out, out


@pytest.mark.large
def test_nuclei_smoke_prints_the_table_or_skips():
    out = run_benchmark("nuclei.py", "--smoke")
    assert re.search(r"^(verdict: mAP@\.50|skipped: no nuclei data)", out, re.M), out


@pytest.mark.large
def test_multi_worker_quick_prints_the_scaling_table():
    out = run_benchmark("multi_worker.py", "--quick")
    for label in ("1 process", r"1 worker \(strategy\)", "2 workers"):
        assert re.search(rf"^{label}\s+\d+\s+[\d.]+\s+\d+\s+[\d.]+x\s+\S+$", out, re.M), out
    assert re.search(r"^all-reduce of \d+ float32 .* ms = [\d.]+% of a 2-worker step$",
                     out, re.M), out


@pytest.mark.large
def test_architectures_quick_prints_a_delta_m_per_architecture():
    out = run_benchmark("architectures.py", "--quick")
    for name in ("hard sharing", "cross-stitch", "MMoE", "DSelect-k MMoE",
                 "learning to branch"):
        assert re.search(rf"^{name}\s+\d+\s+[+-]\d+\.\d$", out, re.M), out
    assert re.search(r"tree \{'t0': \[0, \d\]", out), out


@pytest.mark.large
def test_nuclei_methods_quick_prints_a_row_per_model_or_skips():
    out = run_benchmark("nuclei_methods.py", "--quick", "--methods", "equal,pcgrad")
    if "skipped: no nuclei data" in out:
        pytest.skip("no nuclei data in ../shared/data")
    for label in ("detection only", "segmentation only"):
        assert re.search(rf"^\| {label} \| 1 \| .* \| – \| \d+ \|$", out, re.M), out
    for method in ("equal", "pcgrad"):  # 1 epoch: a 0 single-task figure gives n/a
        assert re.search(rf"^\| {method} \| 1 \| (\d+\.\d\d \| ){{4}}([+-]\d+\.\d\d%|n/a) "
                         r"\| \d+ \|$", out, re.M), out


@pytest.mark.large
def test_nuclei_speed_quick_prints_the_flops_and_the_time_per_part():
    out = run_benchmark("nuclei_speed.py", "--quick")
    for part in ("backbone", "FPN neck", "stride-2 decoder", "detection head",
                 "segmentation head"):
        # recipe, stride-4 model, recipe with narrower heads
        assert re.search(rf"^\| {part} \|(?: [\d.e-]+ \(\d+%\) \|){{3}}$", out, re.M), out
    assert re.search(r"^\| train step, recipe \(seg_stride=2, DB-MTL in parameter mode\) "
                     r"\| \d+ \| 100% \|$", out, re.M), out
    assert re.search(r"^recipe step / rep_grad step: \d+\.\d\dx; recipe step / Equal step: "
                     r"\d+\.\d\dx; Equal step / XLA step: \d+\.\d\dx; .*head_channels=\d+ "
                     r"step: \d+\.\d\dx$", out, re.M), out


@pytest.mark.large
def test_cpu_allocator_quick_prints_both_allocators_in_fresh_processes():
    out = run_benchmark("cpu_allocator.py", "--quick")
    for label in (r"default \(malloc per tensor\)", r"BFC pool \(kerasmtl train\)"):
        assert re.search(rf"^\| {label} \| \d+\.\d\d / \d+\.\d\d \| \d+\.\d\d / \d+\.\d\d \| "
                         r"\d+ \|$", out, re.M), out
    assert re.search(r"^recipe \(seg_stride=2, DB-MTL\): BFC speed-up \d+\.\d\dx in memory, "
                     r"\d+\.\d\dx with the pipeline$", out, re.M), out
    assert re.search(r"^recipe under BFC against the first measured model .*: \d+\.\d\dx the "
                     r"images/s", out, re.M), out


def test_nuclei_methods_resume_refuses_a_file_of_other_settings(tmp_path, capsys):
    import argparse
    import json

    saved_path = list(sys.path)  # the script puts benchmarks/ on the path
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        import nuclei_methods
    finally:
        sys.path[:] = saved_path
    rule = nuclei_methods.instance_rule("centre", 0.25)
    saved = {"epochs": 6, "drop_masks": 0.3, "instance_rule": rule, "seg_stride": 4,
             "batch_size": 16, "results": {"equal": [{"delta_m": 0.0}]}}
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(saved))
    args = argparse.Namespace(resume=True, json=str(path), epochs=6, drop_masks=0.3,
                              seg_stride=4, batch_size=16)
    assert nuclei_methods.resumed(args, rule) == saved["results"]
    args.seg_stride = 2
    with pytest.raises(ValueError, match=r"seg_stride 4 \(asked: 2\)"):
        nuclei_methods.resumed(args, rule)
    # A file from before the stride and batch keys: resumed, and says so.
    del saved["seg_stride"], saved["batch_size"]
    path.write_text(json.dumps(saved))
    capsys.readouterr()
    assert nuclei_methods.resumed(args, rule) == saved["results"]
    assert "does not record seg_stride, batch_size: not checked" in capsys.readouterr().out
