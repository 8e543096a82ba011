"""benchmarks/gpu_check.sh: its CPU dry run exercises the GPU script's whole path."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_its_measurements(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out",
                    str(out)], check=True, env=env, timeout=300)
    res = json.loads(out.read_text())
    assert res["dry_run"] is True and res["device"] == "cpu"
    assert set(res["training"]) == {"autoencoder", "ldm1", "ldm2"}
    assert all(s["steps"] == 2 and s["steps_per_s"] > 0 for s in res["training"].values())
    gen = res["generation"]
    assert gen["images"] == 40 and gen["finite"]  # 4 horizons x 10 seeds
    assert gen["seconds_per_patient"] > 0 and gen["peak_memory_mb"] > 0


def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "no CUDA-enabled torch" in run.stderr
