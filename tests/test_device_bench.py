"""`--on HOST`: scoring and timing on a device over a real SSH server. The device is OpenSSH's sshd on 127.0.0.1 with
keys made here, and its Python a virtual environment holding only the runtime distribution (no torch, no toolkit).
Same machine, same onnxruntime, one thread: the device's logits are the local bench's bit for bit, so every
accuracy figure must be equal. Skips with the reason where sshd cannot start."""
from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.sshd import free_port, keygen, start
from tests.test_runtime_helpers import LABELS, PREPROCESS, small_cnn
from tests.venvs import runtime_venv

pytestmark = pytest.mark.slow
TIMING = dict(batch_sizes=(1, 8), runs=40, warmup=2, rounds=4, threads=1)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("sshd"))
    if isinstance(server, str):
        pytest.skip(server)
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def device_python(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("device")
    return runtime_venv(work / "venv", work)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("artifacts")
    meta = {"labels": list(LABELS), "preprocess": PREPROCESS}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 1, 28, 28)).astype(np.float32)
    np.savez(folder / "rows.npz", x=x, y=rng.integers(0, 10, 96))
    broken = folder / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")
    return {"baseline": small_cnn(folder / "baseline.onnx", 0, meta), "student": small_cnn(folder / "student.onnx", 1, meta),
            "rows": folder / "rows.npz", "broken": broken}


def _device(sshd, python, **config):
    from bench.device import DeviceSpec, SshDevice

    return SshDevice(DeviceSpec.parse("device", str(sshd.client_config(**config)), str(python)))


def _left_on_device(sshd) -> list[Path]:
    """The bench's folders in the device's TMPDIR (the login shell may keep files of its own there)."""
    return sorted(sshd.remote_tmp.glob("edge-compress-bench.*"))


def _pairs(files, *names):
    return [(n, files[n]) for n in names]


def test_bench_on_the_device_gives_the_local_accuracy_and_leaves_nothing_there(sshd, device_python, files):
    from bench.standalone import bench_artifacts

    local = bench_artifacts(_pairs(files, "baseline", "student"), data=str(files["rows"]), **TIMING)
    device = _device(sshd, device_python)
    remote = bench_artifacts(_pairs(files, "baseline", "student"), data=str(files["rows"]), **TIMING, device=device)
    for mine, theirs in zip(local["variants"], remote["variants"]):
        for key in ("accuracy", "top1_agreement_vs_baseline", "discordant_vs_baseline", "logit_sqnr_db_vs_baseline"):
            assert theirs[key] == mine[key], key
        assert theirs["measured_on"] == platform.node() and "measured_on" not in mine
        assert set(theirs["latency_ms"]) == {"1", "8"}
        assert theirs["latency_ms"]["8"]["runs"] == 40 and len(theirs["latency_ms"]["8"]["block_p50"]) == 4
        assert theirs["memory_mib"]["8"]["peak_rss_mib"] > 0
    env = remote["environment"]["device"]
    assert env["runtime_source"] == "edge-compress-runtime 0.1.0 installed on the device"
    assert env["python_executable"] == str(device_python) and "torch" not in env["versions"]
    assert remote["latency_measured_on"].startswith(f"device {platform.node()} over SSH (device)")
    assert _left_on_device(sshd) == []  # the temporary folder went with the session


def test_a_device_without_the_runtime_gets_this_machines_copy(sshd, device_python, files, tmp_path):
    """numpy and onnxruntime there, edge-compress-runtime not: the package travels with the job (said in one line)."""
    from bench.standalone import bench_artifacts

    site = next(device_python.parent.parent.glob("lib/python*/site-packages"))
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith(("runtime", "edge_compress_runtime", "__editable__")):
            (deps / entry.name).symlink_to(entry)
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    (next(bare.glob("lib/python*/site-packages")) / "deps.pth").write_text(str(deps) + "\n")
    device = _device(sshd, bare / "bin" / "python")
    remote = bench_artifacts(_pairs(files, "baseline", "student"), data=str(files["rows"]), **TIMING, device=device)
    local = bench_artifacts(_pairs(files, "baseline", "student"), data=str(files["rows"]), **TIMING)
    assert [v["accuracy"] for v in remote["variants"]] == [v["accuracy"] for v in local["variants"]]
    assert remote["environment"]["device"]["runtime_source"].startswith(
        "edge-compress-runtime 0.1.0 copied from this machine for the bench")
    assert _left_on_device(sshd) == []


def _old_runtime_python(folder: Path, device_python: Path) -> Path:
    old = folder / "old"
    shutil.copytree(Path(__file__).resolve().parent.parent / "runtime", old / "runtime",
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = old / "runtime" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', '__version__ = "0.0.1"'))
    wrapper = folder / "old-python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={old} exec {device_python} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _bare_python(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / "bare")], check=True, timeout=120)
    return folder / "bare" / "bin" / "python"


FAILURES = {  # case -> (what the case changes, the start of the one line)
    "unreachable": "error: device unreachable: ",
    "authentication": "error: authentication refused by device ",
    "host key": "error: host key of device is unknown or has changed ",
    "no python": "error: no Python on device: '/nonexistent/python3' is not on the device's PATH",
    "no runtime": "error: no runtime on device (",
    "runtime too old": "error: edge-compress-runtime 0.0.1 on device (",
    "dies remotely": "error: bench on device failed (exit 1): ",
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_each_device_failure_is_one_line_and_leaves_nothing(case, sshd, device_python, files, tmp_path):
    from compress.cli.main import main

    config, python, names = {}, device_python, ["baseline", "student"]
    if case == "unreachable":
        config = {"name": "closed", "port": free_port()}
    elif case == "authentication":
        config = {"name": "stranger", "key": keygen(tmp_path / "stranger")}
    elif case == "host key":
        (tmp_path / "empty_known_hosts").write_text("")
        config = {"name": "unknown", "known_hosts": tmp_path / "empty_known_hosts"}
    elif case == "no python":
        python = Path("/nonexistent/python3")
    elif case == "no runtime":
        python = _bare_python(tmp_path)
    elif case == "runtime too old":
        python = _old_runtime_python(tmp_path, device_python)
    elif case == "dies remotely":
        names = ["baseline", "broken"]
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["bench", *(f"{n}={files[n]}" for n in names), "--data", str(files["rows"]),
                                       "--batch", "1", "--runs", "8", "--rounds", "2", "--on", "device",
                                       "--ssh-config", str(sshd.client_config(**config)), "--remote-python",
                                       str(python), "--out", str(out)])
    last = result.output.strip().splitlines()[-1]
    assert result.exit_code != 0 and last.startswith(FAILURES[case]), last
    assert "Traceback" not in result.output and not out.exists()
    assert _left_on_device(sshd) == []


def test_a_connection_dropped_mid_bench_reports_nothing_and_cleans_the_device(sshd, device_python, files):
    from bench.device import DeviceError
    from bench.standalone import bench_artifacts

    device = _device(sshd, device_python)
    outcome = {}

    def bench():
        try:
            # blocks of 1,000 runs (well under a second each): after the drop the device's bench dies at its next
            # progress write instead of timing on for minutes
            outcome["report"] = bench_artifacts(_pairs(files, "baseline", "student"), data=str(files["rows"]),
                                                batch_sizes=(1,), runs=400_000, warmup=0, rounds=400, threads=1,
                                                device=device)
        except DeviceError as e:
            outcome["error"] = str(e)

    worker = threading.Thread(target=bench)
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any((d / "out").exists() or (d / "job.json").exists()
                                                  for d in _left_on_device(sshd)):
        time.sleep(0.2)
    assert _left_on_device(sshd), "the bench never started on the device"
    time.sleep(2.0)  # the device is timing now
    sshd.drop_connections()
    worker.join(timeout=120)
    assert "report" not in outcome
    assert outcome["error"].startswith("connection to device dropped during the bench ("), outcome["error"]
    assert outcome["error"].endswith("the rows measured so far are not reported")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _left_on_device(sshd):
        time.sleep(0.5)
    assert _left_on_device(sshd) == []


def test_a_run_benched_on_the_device_ships_by_its_figures(small_run, sshd, device_python, tmp_path):
    """The shared small run, rerun with bench.on: every stage is cached; the candidates are scored and timed on the
    device, each row says so, and their accuracies are the local run's (same arithmetic here)."""
    from compress.pipeline import run
    from tests.conftest import small_recipe

    report, out = small_run
    shutil.copytree(out, tmp_path / "out")
    recipe = small_recipe()
    recipe = recipe.replace(bench=dataclasses.replace(recipe.bench, on="device", ssh_config=str(sshd.client_config()),
                                                      remote_python=str(device_python)))
    remote = run(recipe, tmp_path / "out")
    local = {v["name"]: v for v in report["variants"] if v["name"] != "compressed"}
    for row in remote["variants"]:
        assert row["measured_on"] == platform.node()
        if row["name"] != "compressed":
            assert row["accuracy"] == local[row["name"]]["accuracy"]
            assert row["heldout"] == local[row["name"]]["heldout"]
    assert remote["latency_measured_on"].startswith(f"device {platform.node()} over SSH (device)")
    assert remote["environment"]["device"]["runtime_source"].endswith("installed on the device")
    assert remote["budget"]["shipped"] in local
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["latency_measured_on"] == remote["latency_measured_on"]
    assert _left_on_device(sshd) == []


@pytest.mark.parametrize("spec", ["-oProxyCommand=touch x", "pi@-oProxyCommand=x", "-l@host", "host:123456",
                                  "pi@host:port", "two words"])
def test_a_device_spec_that_ssh_could_read_as_an_option_is_refused(spec):
    from bench.device import DeviceError, DeviceSpec

    with pytest.raises(DeviceError, match=r"is not \[user@\]host\[:port\]"):
        DeviceSpec.parse(spec)


def test_the_ssh_command_line_checks_host_keys_and_ends_options_before_the_host():
    from bench.device import DeviceSpec

    argv = DeviceSpec.parse("pi@raspberrypi.local:2222").ssh_argv("true")
    assert argv[argv.index("--") + 1] == "pi@raspberrypi.local" and "StrictHostKeyChecking=yes" in argv
    assert argv[-1] == "sh -c true" and argv[argv.index("-p") + 1] == "2222"
