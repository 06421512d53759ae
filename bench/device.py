"""Bench on the edge device itself: `--on [user@]host[:port]` over OpenSSH.

The candidates and their sidecars travel to a fresh temporary folder on the device in one SSH session, with the
rows to score; `python -m runtime.device_bench` scores and times them there with the device's own runtime (the
same interleaved blocks as a local bench); logits and raw timings come back and the statistics are computed here
by the code a local bench uses. The remote folder is removed when the session ends, however it ends.

OpenSSH's own client does the connecting: the user's keys, agent and ~/.ssh/config (or `--ssh-config FILE`, passed
to `ssh -F`); host keys are checked as ssh checks them (BatchMode: an unknown key fails, never skipped).
"""
from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import CompressError

DEFAULT_PYTHON = "python3"
CONNECT_TIMEOUT_S = 15
JOB_TIMEOUT_S = 3600
PROBE_SCRIPT = """
import json, platform, sys
out = {"python": sys.version.split()[0], "executable": sys.executable, "host": platform.node()}
for name in ("numpy", "onnxruntime"):
    try:
        out[name] = __import__(name).__version__
    except Exception:
        out[name] = None
try:
    import runtime
    from runtime import device_bench
    out["runtime"], out["protocol"] = runtime.__version__, device_bench.PROTOCOL
except Exception:
    out["runtime"] = None
print("EDGE-COMPRESS-PROBE " + json.dumps(out))
"""
RESULTS_MARKER = b"EDGE-COMPRESS-RESULTS\n"  # what a login shell's rc files print to stdout comes before it
MIN_PYTHON = (3, 11)
# One session: unpack the job into a fresh folder, bench, send the results back; the folder goes on any exit.
JOB_SCRIPT = """set -e
d=$(mktemp -d "${{TMPDIR:-/tmp}}/edge-compress-bench.XXXXXX")
trap 'rm -rf "$d"' EXIT
trap 'exit 129' HUP INT TERM PIPE
echo "edge-compress-dir $d" >&2
tar -xzf - -C "$d"
cd "$d"
{pythonpath}{python} -m runtime.device_bench run "$d" >&2
printf 'EDGE-COMPRESS-RESULTS\\n'
tar -czf - -C "$d/out" result.json result.npz
"""


class DeviceError(CompressError):
    """The device cannot bench: unreachable, refused, no Python or runtime there, or the bench failed on it."""


@dataclass(frozen=True)
class DeviceSpec:
    host: str
    user: str | None = None
    port: int | None = None
    ssh_config: str | None = None
    remote_python: str | None = None

    @classmethod
    def parse(cls, spec: str, ssh_config: str | None = None, remote_python: str | None = None) -> "DeviceSpec":
        match = re.fullmatch(r"(?:([^@\s:-][^@\s:]*)@)?([A-Za-z0-9][A-Za-z0-9._-]*|\[[0-9A-Fa-f:]+\])(?::(\d{1,5}))?",
                             spec.strip())  # nothing that ssh could read as an option
        if not match:
            raise DeviceError(f"--on {spec!r} is not [user@]host[:port], e.g. pi@raspberrypi.local or jetson:2222")
        user, host, port = match.groups()
        if ssh_config is not None and not Path(ssh_config).is_file():
            raise DeviceError(f"--ssh-config {ssh_config}: no such file")
        return cls(host.strip("[]"), user, int(port) if port else None, ssh_config, remote_python)

    @property
    def name(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"

    def ssh_argv(self, command: str) -> list[str]:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o",
                f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        if self.port:
            argv += ["-p", str(self.port)]
        # the device's login shell may be any shell: the script runs under POSIX sh
        return argv + ["--", f"{self.user}@{self.host}" if self.user else self.host, f"sh -c {shlex.quote(command)}"]


def ssh_failure(device: DeviceSpec, stderr: str) -> str:
    """One line for a failure ssh itself reported (exit 255), naming what and where."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("edge-compress")]
    last = lines[-1] if lines else "no message"
    text = stderr.lower()
    if "permission denied" in text or "too many authentication failures" in text:
        return (f"authentication refused by {device.name} ({last}); load the key into ssh-agent or name it "
                "(IdentityFile in ~/.ssh/config or --ssh-config) and add it to the device's authorized_keys")
    if "host key verification failed" in text or "identification has changed" in text:
        return (f"host key of {device.name} is unknown or has changed ({last}); check it and add it to known_hosts "
                "(ssh once by hand); host keys are never skipped")
    if any(s in text for s in ("could not resolve", "connection refused", "timed out", "no route to host",
                               "network is unreachable", "connection closed by remote host")) and "edge-compress-dir" \
            not in stderr:
        return f"{device.name} unreachable: {last}"
    return f"ssh to {device.name} failed: {last}"


def _ssh(device: DeviceSpec, command: str, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess:
    if shutil.which("ssh") is None:
        raise DeviceError("--on needs OpenSSH's client (ssh) on this machine: apt-get install openssh-client")
    try:
        return subprocess.run(device.ssh_argv(command), input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{device.name} did not answer within {timeout:.0f} s") from None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


@dataclass
class SshDevice:
    """A device reached over SSH that benches artifacts; `environment` is its own, once it has measured."""

    spec: DeviceSpec
    environment: dict[str, Any] = field(default_factory=dict)
    runtime_source: str = ""

    @property
    def python(self) -> str:
        return self.spec.remote_python or DEFAULT_PYTHON

    def probe(self) -> dict[str, Any]:
        """What the device has: its Python, numpy, onnxruntime and edge-compress-runtime (None where missing)."""
        done = _ssh(self.spec, f"exec {shlex.quote(self.python)} -", PROBE_SCRIPT.encode())
        err = done.stderr.decode(errors="replace")
        if done.returncode == 255:
            raise DeviceError(ssh_failure(self.spec, err))
        if done.returncode == 127 or "not found" in err and done.returncode != 0:
            raise DeviceError(f"no Python on {self.spec.name}: {self.python!r} is not on the device's PATH; install "
                              "Python 3 there or give --remote-python PATH")
        found = [line for line in done.stdout.decode(errors="replace").splitlines()
                 if line.startswith("EDGE-COMPRESS-PROBE ")]
        if done.returncode != 0 or not found:
            last = (err.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise DeviceError(f"{self.python} on {self.spec.name} did not run: {last}")
        return json.loads(found[-1].split(" ", 1)[1])

    def choose_runtime(self, found: dict[str, Any]) -> bool:
        """Whether this machine's runtime package must travel with the job (the device has numpy and onnxruntime
        but not the runtime); raises when the device cannot run it at all. Says which in one line."""
        import runtime
        from runtime.device_bench import PROTOCOL

        where = f"{self.spec.name} ({self.python}, Python {found['python']})"
        if _version(found["python"]) < MIN_PYTHON:
            raise DeviceError(f"Python {found['python']} ({self.python}) on {self.spec.name} is older than the "
                              f"runtime's {'.'.join(map(str, MIN_PYTHON))}: give a newer one with --remote-python PATH")
        if found.get("runtime"):
            if _version(found["runtime"]) < _version(runtime.__version__) or found.get("protocol") != PROTOCOL:
                raise DeviceError(f"edge-compress-runtime {found['runtime']} on {where} is older than this toolkit's "
                                  f"{runtime.__version__}: pip install -U edge-compress-runtime there (or this "
                                  "checkout's runtime/ folder)")
            self.runtime_source = f"edge-compress-runtime {found['runtime']} installed on the device"
            copy = False
        elif found.get("numpy") and found.get("onnxruntime"):
            self.runtime_source = (f"edge-compress-runtime {runtime.__version__} copied from this machine for the "
                                   f"bench (not installed there), onnxruntime {found['onnxruntime']} of the device")
            copy = True
        else:
            missing = " and ".join(n for n in ("numpy", "onnxruntime") if not found.get(n))
            raise DeviceError(f"no runtime on {where}: {missing} missing; pip install edge-compress-runtime there "
                              "(this checkout's runtime/ folder; it pulls numpy and onnxruntime)")
        print(f"  on {where}: {self.runtime_source}", file=sys.stderr)
        return copy

    def check(self) -> None:
        """Before any work: the device answers and can run the bench (each failure one line)."""
        self.choose_runtime(self.probe())

    def measure(self, variants: list, split, heldout_extra, *, batch_sizes: tuple[int, ...], warmup: int,
                runs: int, rounds: int, threads: int):
        """bench.report.Measured for `variants`, scored on `split` (+ `heldout_extra`) and timed on the device."""
        from bench.variants import RUNTIME_NAMES, Measured, provider_fields

        if hasattr(split, "input_ids"):
            raise DeviceError("--on benches one-input models (images, model-ready rows) in this version; bench text "
                              "models on this machine")
        copy_runtime = self.choose_runtime(self.probe())  # again: the device may have changed since check()
        job = {"protocol": 1, "threads": threads, "warmup": warmup, "runs": runs, "rounds": rounds,
               "batch_sizes": list(batch_sizes), "variants": []}
        with tempfile.TemporaryDirectory(prefix="edge-compress-job-") as tmp:
            payload = _pack(Path(tmp), variants, job, split.x, None if heldout_extra is None else heldout_extra.x,
                            copy_runtime)
            result, arrays = self._run(payload, copy_runtime)
        self.environment = {**result["environment"], "runtime_source": self.runtime_source, "reached_as": self.spec.name}
        names = [v.name for v in variants]
        fields = {n: {"runtime": RUNTIME_NAMES.get(d["backend"], d["backend"]), **provider_fields(d["providers"], None)}
                  for n, d in zip(names, result["variants"])}
        blocks: dict[int, dict[str, list]] = {}
        for key, value in arrays.items():
            if key.startswith("blocks/"):
                _, b, i, r = key.split("/")
                per_round = blocks.setdefault(int(b), {}).setdefault(names[int(i)], {})
                per_round[int(r)] = value
        blocks = {b: {n: [rs[r] for r in sorted(rs)] for n, rs in by.items()} for b, by in blocks.items()}
        memory = {names[int(i)]: m for i, m in result["memory"].items()}
        return Measured({n: arrays[f"logits/{i}"] for i, n in enumerate(names)},
                        {n: arrays[f"extra/{i}"] for i, n in enumerate(names) if f"extra/{i}" in arrays},
                        fields, blocks, memory, int(result["top"]), self.environment)

    def _run(self, payload: bytes, copy_runtime: bool) -> tuple[dict, dict[str, np.ndarray]]:
        """Send the job, bench, bring the results back; nothing is reported from a session that did not finish."""
        pythonpath = 'PYTHONPATH="$d/pkgs" ' if copy_runtime else ""
        script = JOB_SCRIPT.format(pythonpath=pythonpath, python=shlex.quote(self.python))
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(self.spec.ssh_argv(script), stdin=subprocess.PIPE, stdout=out, stderr=err)
            timed_out = False
            try:
                proc.communicate(payload, timeout=JOB_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                timed_out = True
            err.seek(0)
            stderr = err.read().decode(errors="replace")
            out.seek(0)
            returned = out.read()
        remote_dir = next((line.split(" ", 1)[1].strip() for line in stderr.splitlines()
                           if line.startswith("edge-compress-dir ")), None)
        if timed_out:
            if remote_dir:
                _ssh_quietly(self.spec, f"rm -rf -- {shlex.quote(remote_dir)}")
            raise DeviceError(f"the bench on {self.spec.name} did not finish within {JOB_TIMEOUT_S} s; no figures "
                              "reported (fewer --runs, or fewer variants)")
        if proc.returncode != 0:
            raise DeviceError(self._failure(proc.returncode, stderr, remote_dir))
        _, marker, returned = returned.partition(RESULTS_MARKER)
        try:
            if not marker:
                raise EOFError
            with tarfile.open(fileobj=io.BytesIO(returned), mode="r:gz") as tar:
                result = json.load(tar.extractfile("result.json"))
                with np.load(io.BytesIO(tar.extractfile("result.npz").read()), allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
        except (tarfile.TarError, KeyError, OSError, ValueError, EOFError, AttributeError):
            raise DeviceError(f"the results from {self.spec.name} came back incomplete; no figures reported") from None
        return result, arrays

    def _failure(self, code: int, stderr: str, remote_dir: str | None) -> str:
        if code == 255 and remote_dir is None:
            return ssh_failure(self.spec, stderr)
        if code in (255, 129) or code < 0:
            if remote_dir:
                _ssh_quietly(self.spec, f"rm -rf -- {shlex.quote(remote_dir)}")
            last = _last_line(stderr)
            return (f"connection to {self.spec.name} dropped during the bench ({last}); the rows measured so far are "
                    "not reported")
        return f"bench on {self.spec.name} failed (exit {code}): {_last_line(stderr)}"


def _last_line(stderr: str) -> str:
    lines = [line.strip(" .") for line in stderr.splitlines() if line.strip(" .")]
    lines = [line for line in lines if not line.startswith(("edge-compress-dir", "scored ", "batch "))]
    return lines[-1] if lines else "no message"


def _ssh_quietly(spec: DeviceSpec, command: str) -> None:
    try:
        subprocess.run(spec.ssh_argv(command), capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass


def _pack(tmp: Path, variants: list, job: dict, x: np.ndarray, x_extra: np.ndarray | None, copy_runtime: bool) -> bytes:
    """The job as a gzipped tar: job.json, rows.npz, each artifact with its sidecar (and, when the device lacks it,
    this machine's runtime package under pkgs/)."""
    from runtime import sidecar_path

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i, v in enumerate(variants):
            files = {str(b): p for b, p in (v.per_batch or {}).items()} or {"": v.path}
            entry: dict[str, Any] = {"name": v.name}
            for batch, path in files.items():
                if not Path(path).is_file():
                    raise DeviceError(f"{path} is not a file; --on benches single-file artifacts (.onnx, .tflite)")
                rel = f"arts/{i}/{batch or 'any'}/{Path(path).name}"
                tar.add(path, rel)
                if sidecar_path(path).is_file():
                    tar.add(sidecar_path(path), f"arts/{i}/{batch or 'any'}/{sidecar_path(path).name}")
                if batch:
                    entry.setdefault("per_batch", {})[batch] = rel
                entry.setdefault("path", rel)
            job["variants"].append(entry)
        rows = {"x": x} if x_extra is None else {"x": x, "x_extra": x_extra}
        rows_bytes = io.BytesIO()
        np.savez(rows_bytes, **rows)
        _add_bytes(tar, "rows.npz", rows_bytes.getvalue())
        _add_bytes(tar, "job.json", json.dumps(job).encode())
        if copy_runtime:
            import runtime

            source = Path(runtime.__file__).resolve().parent
            for module in sorted(source.glob("*.py")):
                tar.add(module, f"pkgs/runtime/{module.name}")
    return buffer.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def for_bench(bench_config) -> SshDevice | None:
    """The device a recipe's bench section names (`on`, `ssh_config`, `remote_python`), or None for this machine."""
    if not getattr(bench_config, "on", None):
        return None
    return SshDevice(DeviceSpec.parse(bench_config.on, bench_config.ssh_config, bench_config.remote_python))


def device_line(env: dict[str, Any]) -> str:
    """The report's `latency_measured_on` for figures taken on a device: which machine, its CPU class, OS and the
    runtime that ran them."""
    versions = env.get("versions", {})
    runtimes = ", ".join(f"{name} {versions[name]}" for name in ("onnxruntime", "ai-edge-litert") if name in versions)
    return (f"device {env.get('host', '?')} over SSH ({env.get('reached_as', '?')}): {env.get('cpu', '?')}, "
            f"{env.get('int8_class', '?')}, {env.get('cores', '?')} cores, {env.get('os', '?')} {env.get('machine', '')}"
            f"; {runtimes or 'runtime versions not reported'}; {env.get('runtime_source', '')}").rstrip("; ")
