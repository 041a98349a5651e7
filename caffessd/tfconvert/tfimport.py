"""The one way caffessd imports TensorFlow (convert-tf, train): quietly.

TensorFlow prints its C++ start-up chatter (absl's "log messages before
InitializeLog", oneDNN, CUDA probing, CPU features) on file descriptor 2
while it loads, and TF_CPP_MIN_LOG_LEVEL no longer reaches all of it. Those
eight lines would come before caffessd's own one-line error. So stderr is
pointed at /dev/null for the import only (real failures still arrive as
Python exceptions), TF_CPP_MIN_LOG_LEVEL is set for what TensorFlow logs
later unless the user chose a level, and TensorFlow's Python logger keeps
errors only.

TensorFlow's CPU tensors come from its caching (BFC) allocator rather than
straight from malloc, unless the user set TF_CPU_ALLOCATOR_USE_BFC. With
plain malloc, glibc hands many of a training step's short-lived tensors back
to the kernel and faults them in again as fresh pages: 115,000 page faults
per MobileNetV2-SSDLite 300 step at batch 8, 15% of the CPU time in the
kernel, and 1.28x slower steps (docs/train.md). The variable is read when
TensorFlow allocates its first tensor, so setting it here, before or after
the import, is in time for any process whose first tensor caffessd makes.
Where TensorFlow turns its oneDNN custom operations on by default (CPUs with
AVX-512 VNNI, AVX-512 BF16 or AMX), it takes CPU tensors from oneDNN's own
caching allocator and the variable changes nothing.

It lives with convert-tf, the lower of its two users; caffessd.train.tfimport
calls it (the core never imports TensorFlow).
"""
from __future__ import annotations

import os
import sys

from caffessd.errors import CaffessdError


def tensorflow(needed_for: str = "this command"):
    """The tensorflow module, or a CaffessdError naming the extra to install."""
    prefer_caching_cpu_allocator()
    loaded = sys.modules.get("tensorflow")
    if loaded is not None:  # None: an import that is blocked (or failed): let `import` say so below
        return loaded
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = _mute_stderr()
    try:
        import tensorflow as tf
    except ImportError:
        raise CaffessdError(f"{needed_for} needs TensorFlow: pip install 'caffessd[tf]'") from None
    finally:
        _restore_stderr(saved)
    try:
        tf.get_logger().setLevel("ERROR")
    except AttributeError:  # a stub or partial installation
        pass
    return tf


def prefer_caching_cpu_allocator() -> None:
    """Ask TensorFlow for its BFC allocator on the CPU (see the module's
    docstring), leaving a user's own choice alone."""
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


def _mute_stderr():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        return saved
    except (OSError, ValueError):  # no real fd 2 (an embedding host)
        return None


def _restore_stderr(saved):
    if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)
