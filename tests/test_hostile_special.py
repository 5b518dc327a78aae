"""Special files as input: named pipes, sockets, devices, links to them. Refused at once, never waited on.

Every CLI run here has its own short timeout: the failure this guards against is a hang
(``mkfifo m.keras; decay-audit scan m.keras`` once waited forever).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest
from conftest import SAMPLES

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")

TIMEOUT = 60


def _cli(*args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "decay_audit.cli", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        pass_fds=pass_fds,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def _refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-300:], result.stderr[-300:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_named_pipe_as_model_is_refused_by_every_command(tmp_path):
    fifo = tmp_path / "m.keras"
    os.mkfifo(fifo)
    link = tmp_path / "link.keras"
    link.symlink_to(fifo)
    for path in (fifo, link):
        for args in (
            ["scan", str(path)],
            ["rules", str(path), "--target", "native"],
            ["check", str(path), "--target", "keras", "--var-names", "bias"],
        ):
            _refused(_cli(*args), str(path), "named pipe")


def test_process_substitution_pipe_is_refused():
    """``decay-audit scan <(cat m.keras)``: the shell passes /dev/fd/N, a pipe with a writer."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, (SAMPLES / "seed.keras").read_bytes()[:4096])
        _refused(_cli("scan", f"/dev/fd/{read_fd}", pass_fds=(read_fd,)), f"/dev/fd/{read_fd}", "pipe")
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_socket_and_devices_are_refused(tmp_path):
    sock_path = tmp_path / "s.keras"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(sock_path))
        _refused(_cli("scan", str(sock_path)), "s.keras", "socket")
    finally:
        server.close()
    for device in ("/dev/null", "/dev/zero", "/dev/urandom"):
        if os.path.exists(device):
            _refused(_cli("scan", device), device, "character device")


def test_directory_scan_never_opens_special_files(tmp_path):
    directory = tmp_path / "models"
    directory.mkdir()
    os.mkfifo(directory / "a_pipe.keras")  # sorted first: opening it would block the scan forever
    _refused(_cli("scan", str(directory)), "exactly one model, found 0")
    shutil.copy(SAMPLES / "seed.keras", directory / "seed.keras")
    result = _cli("scan", str(directory), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert '"dense1/kernel"' in result.stdout


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "/dev/null"])
def test_saved_model_graph_that_is_not_a_file_is_refused(tmp_path, target):
    directory = tmp_path / "export"
    shutil.copytree(SAMPLES / "seed_export", directory)
    graph = directory / "saved_model.pb"
    graph.unlink()
    if target == "fifo":
        os.mkfifo(graph)
    else:
        graph.symlink_to(target)
    kind = "named pipe" if target == "fifo" else "character device"
    _refused(_cli("scan", str(directory)), "saved_model.pb", kind)
    _refused(_cli("scan", str(graph)), "saved_model.pb", kind)


def test_file_swapped_for_a_pipe_after_the_check_is_not_waited_on(tmp_path):
    """read_head opens O_NONBLOCK and checks the descriptor: the race after stat cannot block."""
    fifo = tmp_path / "swapped.keras"
    os.mkfifo(fifo)
    code = (
        "import sys; from pathlib import Path; from decay_audit.errors import ModelLoadError\n"
        "from decay_audit.loaders import read_head\n"
        "try:\n    read_head(Path(sys.argv[1]), sys.argv[1])\n"
        "except ModelLoadError as exc:\n    print(exc.problem)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=TIMEOUT)
    assert "named pipe" in result.stdout, (result.stdout, result.stderr)


def test_policy_and_rule_files_that_are_pipes_are_refused(tmp_path):
    fifo = tmp_path / "policy.json"
    os.mkfifo(fifo)
    _refused(_cli("scan", str(SAMPLES / "seed.keras"), "--policy", str(fifo)), "policy.json", "not a regular file")
    _refused(
        _cli("check", str(SAMPLES / "seed.keras"), "--target", "keras", "--rules", str(fifo)),
        "policy.json",
        "not a regular file",
    )


def test_symlink_loop_is_one_line(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    _refused(_cli("scan", str(tmp_path / "a")), "symbolic link loop")
