"""Shared by the server tests: a free port, and a Ray + Serve session for one test module."""

import base64
import contextlib
import io
import os
import signal
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_serve():
    """Start Ray (2 CPUs, workers see this checkout and the test's ERNIE_VL_HOME) unless a session is running, and
    Serve's HTTP proxy on a free loopback port; yields the port and shuts down what it started."""
    import ray
    from ray import serve

    started_ray = not ray.is_initialized()
    if started_ray:
        from ernie_vl.worker_env import worker_env

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": worker_env()})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield port
    finally:
        serve.shutdown()
        if started_ray:
            ray.shutdown()


def stop_server(proc: subprocess.Popen) -> None:
    """Stop an `ernie-vl serve` subprocess started in its own session as a user would (Ctrl-C); its whole process
    group is killed if it has not exited within a minute."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# ----------------------------------------------------------------------------------------------- media for requests


def png_bytes(w=64, h=48, color=(200, 30, 30), mode="RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (w, h), color if mode == "RGB" else 0).save(buf, "PNG")
    return buf.getvalue()


def mp4_bytes(frames=16, w=64, h=48, fps=8) -> bytes:
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        st = c.add_stream("mpeg4", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), (i * 15) % 255, np.uint8), format="rgb24")
            for pkt in st.encode(frame):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    return buf.getvalue()


def data_url(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
