"""Importing TensorFlow without its load-time log lines, for the command line.

`start_tensorflow_quietly` imports Keras (so TensorFlow) with
`TF_CPP_MIN_LOG_LEVEL` applied also to the lines absl writes while the
shared libraries load, before absl is initialised.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

_ABSL_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITIES = b"IWEF"


# Commands that train: TensorFlow's best-fit-with-coalescing (BFC) allocator
# for CPU tensors, instead of one malloc per tensor (see
# `start_tensorflow_quietly`).
TRAINING_COMMANDS = ("train", "quickstart")


def start_tensorflow_quietly(command: str | None = None) -> None:
    """Imports TensorFlow (and Keras) with its C++ log level applied.

    For a command that trains (`TRAINING_COMMANDS`), unless the user set
    `TF_CPU_ALLOCATOR_USE_BFC`, it is set to `true` first: TensorFlow then
    keeps CPU tensors in its own memory pool instead of one `malloc` (and,
    above glibc's 32 MB mmap threshold, one `mmap`, page faults and zeroing)
    per tensor. On the nuclei recipe's train step (batches of 16 256x256
    crops, 2 cores) that is 1.6x faster with the batches in memory
    (`benchmarks/cpu_allocator.py`), and its preset's training command went
    from ~70 to 43 minutes;
    the pool grows to the step's peak and is not given back to the OS, which
    suits a training run but not a long-lived server (`kerasmtl serve`
    keeps the default). The variable is read when TensorFlow makes its CPU
    allocator, so only before the import.

    Unless the user set `TF_CPP_MIN_LOG_LEVEL`, the command line sets it to 3:
    on a machine without a GPU TensorFlow logs a dozen INFO and ERROR lines
    (no CUDA driver, oneDNN notes) that say nothing about the run. TensorFlow
    applies the level to its own logs, but not to the lines absl writes while
    the shared libraries load (`port.cc`, `cudart_stub.cc`: they come before
    absl is initialised), so the import runs with stderr passing through a
    filter that applies the same level to those.
    """
    if "tensorflow" in sys.modules:
        return  # already imported (a test, an embedding program): not ours to change
    if command in TRAINING_COMMANDS:
        os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        level = int(level)
    except ValueError:
        level = 0
    with drop_absl_lines_below(level):
        import keras  # noqa: F401  (imports TensorFlow)


@contextlib.contextmanager
def drop_absl_lines_below(level: int):
    """Copies file descriptor 2 (C++ writes there, not to `sys.stderr`) to
    the real stderr, less absl log lines of a severity (I=0, W=1, E=2) below
    `level`; fatal lines always pass."""
    if level <= 0:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (e.g. pythonw): nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                match = _ABSL_LINE.match(line)
                severity = _SEVERITIES.index(match.group(1)) if match else None
                if line.startswith(_ABSL_PREAMBLE) or (
                        severity is not None and severity < min(level, 3)):
                    continue
                os.write(saved, line)

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees EOF
        thread.join()
        os.close(saved)
