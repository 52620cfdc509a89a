"""Keeping native libraries' chatter off the terminal.

TensorFlow, the TFLite and ONNX converters and ONNX Runtime write to file
descriptor 2 from C++, past Python's `sys.stderr`, and would bury the CLI's
one-line messages; `captured_stderr` collects that output instead.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile


@contextlib.contextmanager
def captured_stderr():
    """Collect what native code writes to file descriptor 2; yields a StringIO filled on exit."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        captured = io.StringIO()
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.write(sink.read().decode("utf-8", "replace"))


def start_tensorflow_quietly() -> None:
    """Import TensorFlow and find its devices with the C++ start-up logs hidden (shown if the import fails)."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # C++ errors such as the oneDNN int32 notice too; -v shows all
    log = None
    try:
        with captured_stderr() as log:
            import tensorflow as tf

            tf.config.list_physical_devices()
    except BaseException:
        if log is not None:
            sys.stderr.write(log.getvalue())
        raise
