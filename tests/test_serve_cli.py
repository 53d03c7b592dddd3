"""`ernie-vl serve` as a user runs it: a subprocess, then the README section's curl and openai examples, then Ctrl-C.

The commands are read from the README's serving section (port 8000 replaced by a free one), so the documented examples
are the tested ones.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serve_support import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.subprocess]

import httpx  # noqa: E402,F401 - part of the test extra: a missing one must fail, not skip
import openai  # noqa: E402,F401 - part of the test extra

ROOT = Path(__file__).resolve().parents[1]
SECTION = (ROOT / "README.md").read_text().split("<!-- serve-section -->")[1].split("<!-- /serve-section -->")[0]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", SECTION, flags=re.S)



def test_readme_serve_command_curl_and_openai_examples_work(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "RAY_ADDRESS": ""}
    assert "ernie-vl serve " in _blocks("bash")[0] or "ernie-vl serve\n" in _blocks("bash")[0]
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ernie_vl_cli", "serve", "--port", str(port), "--num-cpus", "0.5",
         "--torch-threads", "1"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(1)

        curl = next(b for b in _blocks("bash") if b.startswith("curl"))
        out = subprocess.run(["bash", "-c", curl.replace("127.0.0.1:8000", f"127.0.0.1:{port}")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and '"object":"chat.completion"' in out.stdout, out.stdout + out.stderr
        assert '"finish_reason"' in out.stdout and '"usage"' in out.stdout

        [example] = _blocks("python")
        out = subprocess.run([sys.executable, "-c", example.replace("127.0.0.1:8000", f"127.0.0.1:{port}")],
                             capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        assert "completion_tokens=" in out.stdout  # the printed usage object
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert "shutting down" in (tmp_path / "serve.log").read_text()
