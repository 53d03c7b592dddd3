"""`ernie-vl serve` as a user runs it: a subprocess, then the README section's curl and openai examples, then Ctrl-C;
and as a process manager stops it: SIGTERM to its whole process group.

The commands are read from the README's serving section (port 8000 replaced by a free one), so the documented examples
are the tested ones.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serve_support import free_port, stop_server

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.subprocess]

import httpx  # noqa: E402,F401 - part of the test extra: a missing one must fail, not skip
import openai  # noqa: E402,F401 - part of the test extra

ROOT = Path(__file__).resolve().parents[1]
SECTION = (ROOT / "README.md").read_text().split("<!-- serve-section -->")[1].split("<!-- /serve-section -->")[0]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", SECTION, flags=re.S)



def _start_server(tmp_path) -> tuple[subprocess.Popen, int, dict]:
    """`ernie-vl serve` in a session (and process group) of its own, once it says it is serving."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "RAY_ADDRESS": ""}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ernie_vl_cli", "serve", "--port", str(port), "--num-cpus", "0.5",
         "--torch-threads", "1"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 150
    while "(Ctrl-C to stop)" not in (tmp_path / "serve.log").read_text():
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.5)
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    return proc, port, env


def _ask_colour(port: int, rgb: tuple[int, int, int]) -> str:
    """"What colour is the square?" about a 112x112 picture of a square of colour `rgb` on white."""
    import base64
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (112, 112), "white")
    ImageDraw.Draw(image).rectangle([62, 60, 97, 95], fill=rgb)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}},
               {"type": "text", "text": "What colour is the square?"}]
    r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={
        "model": "ernie-vl-demo", "max_tokens": 16, "temperature": 0, "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_readme_serve_command_curl_and_openai_examples_work(tmp_path):
    assert "ernie-vl serve " in _blocks("bash")[0] or "ernie-vl serve\n" in _blocks("bash")[0]
    proc, port, env = _start_server(tmp_path)
    try:
        curl = next(b for b in _blocks("bash") if b.startswith("curl"))
        out = subprocess.run(["bash", "-c", curl.replace("127.0.0.1:8000", f"127.0.0.1:{port}")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and '"object":"chat.completion"' in out.stdout, out.stdout + out.stderr
        assert '"finish_reason"' in out.stdout and '"usage"' in out.stdout
        # the default model is the demo checkpoint: it sees the README's red square, and a blue one as blue
        assert json.loads(out.stdout)["choices"][0]["message"]["content"] == "The square is red."
        assert _ask_colour(port, (40, 70, 220)) == "The square is blue."

        [example] = _blocks("python")
        out = subprocess.run([sys.executable, "-c", example.replace("127.0.0.1:8000", f"127.0.0.1:{port}")],
                             capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        assert "completion_tokens=" in out.stdout  # the printed usage object
    finally:
        stop_server(proc)
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert "shutting down" in (tmp_path / "serve.log").read_text()


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process (/proc)."""
    out = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError, ValueError):
            continue
        if fields[0] not in ("Z", "X"):  # exited, not yet reaped
            out[int(name)] = (int(fields[1]), int(fields[2]))
    return out


def test_sigterm_to_the_process_group_stops_the_server_and_every_ray_process(tmp_path):
    """What systemd and container runtimes send: SIGTERM to the whole process group (which reaches Ray's GCS and
    raylet, not its workers: each has a process group of its own). The command exits 0 within 30 s, the port no longer
    answers, and no process it started is left (its group, and the workers and actors below it)."""
    proc, port, _ = _start_server(tmp_path)
    procs = _processes()
    below, todo = set(), [proc.pid]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _) in procs.items():
            if ppid == parent and pid not in below:
                below.add(pid)
                todo.append(pid)
    assert len({procs[p][1] for p in below}) > 1  # workers in process groups of their own: the case this covers
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        rc = proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running 30 s after SIGTERM: {(tmp_path / 'serve.log').read_text()[-3000:]}")
    log = (tmp_path / "serve.log").read_text()
    assert rc == 0 and "shutting down" in log and "stopped" in log, log[-3000:]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    left = {pid: v for pid, v in _processes().items() if pid in below or v[1] == proc.pid}
    assert not left, left
    assert time.monotonic() - t0 < 30
