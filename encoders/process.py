"""The towers in a process of their own: :class:`EncoderProcess` has the surface of
:class:`~encoders.runtime.Encoder` the embedder and the rollout job use (``manifest``,
``image_spec``, ``has_shared_space``, ``encode``), and runs ``encode`` in a child process.

Why a process: ``Encoder.encode`` takes the GIL back after each ONNX Runtime call, the
tokenizer and the numpy glue. In a service whose event loop makes a system call every few
hundred microseconds (Kafka, HTTP, Milvus), every one of those takes waits behind the loop —
the GIL's convoy effect. Measured on 2 cores (batch of 32, ``cpu`` profile): a thread doing
Python work with frequent system calls made the tokenizer 0.8 -> 78 ms and the fusion head
1.1 -> 295 ms per batch. In a child process the towers own their interpreter.

Images travel through one shared-memory block (no pickling of tensors); titles and results
(a few kB) through a pipe. A child that dies is started again on the next call; the call in
flight fails with :class:`ModelError` ``encoder_process_died`` (the embedder then bisects the
batch, so an input that kills the runtime ends in the dead-letter topic alone).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from collections.abc import Sequence
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import EncoderError, ModelError
from encoders.manifest import Manifest
from encoders.preprocess import ImageSpec
from encoders.runtime import BatchEncoder, Encoder, EncodeResult

log = logging.getLogger(__name__)

#: Seconds a child may take to load the model before the start counts as failed.
START_TIMEOUT_S = 120.0


def _serve(
    conn: Connection,
    model_dir: str,
    providers: list[str] | None,
    intra_op_threads: int | None,
    block_name: str,
    capacity: int,
) -> None:
    """The child: load the model, then answer ``encode`` calls until the pipe closes."""
    # Attaching registers the name with the resource tracker the child shares with its
    # parent (spawn hands it down): a no-op there; the parent unlinks the block on close.
    block = shared_memory.SharedMemory(name=block_name)
    try:
        encoder = Encoder.load(model_dir, providers=providers, intra_op_threads=intra_op_threads)
    except EncoderError as exc:
        conn.send(("error", exc.reason, str(exc)))
        return
    except Exception as exc:  # anything else the runtime raises while loading
        conn.send(("error", "session_failed", repr(exc)))
        return
    size = encoder.image_spec.size
    pixels = np.ndarray((capacity, 3, size, size), np.float32, buffer=block.buf)
    conn.send(("ready", encoder.providers))
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if message[0] == "stop":
                return
            _, count, titles = message
            try:
                result = encoder.encode(pixels[:count], titles)
            except EncoderError as exc:
                conn.send(("error", exc.reason, str(exc)))
                continue
            except Exception as exc:
                conn.send(("error", "encode_failed", repr(exc)))
                continue
            try:
                conn.send(("ok", result.embeddings, result.mismatch, result.image_vectors))
            except OSError:
                return  # the parent is gone
    finally:
        del pixels
        block.close()


class EncoderProcess:
    """An :class:`~encoders.runtime.Encoder` run in a child process; ``encode`` blocks the
    calling thread (not the GIL) while the child works. One call at a time."""

    def __init__(
        self,
        model_dir: Path | str,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        capacity: int = 64,
    ) -> None:
        self.directory = Path(model_dir)
        self.manifest = Manifest.read(self.directory)
        self.image_spec: ImageSpec = self.manifest.image
        self.capacity = capacity
        self.providers: list[str] = []
        self._providers = list(providers) if providers else None
        self._intra_op_threads = intra_op_threads
        size = self.image_spec.size
        self._block = shared_memory.SharedMemory(create=True, size=capacity * 3 * size * size * 4)
        self._pixels = np.ndarray((capacity, 3, size, size), np.float32, buffer=self._block.buf)
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._conn: Connection | None = None
        try:
            self._start()
        except BaseException:
            self._release()
            raise

    @property
    def has_shared_space(self) -> bool:
        """Whether the model exports the image and title heads into one shared space."""
        return {"image", "text"} <= set(self.manifest.shared_space)

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve,
            args=(
                child,
                str(self.directory),
                self._providers,
                self._intra_op_threads,
                self._block.name,
                self.capacity,
            ),
            name="vitrine-towers",
            daemon=True,
        )
        process.start()
        child.close()  # the child's end lives in the child only: its death reads as EOF here
        if not parent.poll(START_TIMEOUT_S):
            process.kill()
            process.join()
            parent.close()
            raise ModelError(
                f"the encoder process did not load {self.directory} within {START_TIMEOUT_S:.0f} s",
                reason="session_failed",
            )
        try:
            answer = parent.recv()
        except EOFError:
            answer = ("error", "encoder_process_died", f"exit code {process.exitcode}")
        if answer[0] != "ready":
            process.join(5)
            parent.close()
            raise ModelError(answer[2], reason=answer[1])
        self.providers = list(answer[1])
        self._process, self._conn = process, parent
        log.info("towers of model %s in process %d", self.manifest.model_version, process.pid)

    def _died(self) -> ModelError:
        process = self._process
        process.join(5)
        code = process.exitcode
        assert self._conn is not None
        self._conn.close()
        self._process = self._conn = None
        log.error("the encoder process died (exit code %s); starting another", code)
        return ModelError(
            f"the encoder process died (exit code {code})", reason="encoder_process_died"
        )

    def _call(self, images: np.ndarray, titles: list[str]) -> EncodeResult:
        if self._conn is None:
            self._start()
        assert self._conn is not None
        count = images.shape[0]
        np.copyto(self._pixels[:count], images, casting="same_kind")
        try:
            self._conn.send(("encode", count, titles))
            answer = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            raise self._died() from exc
        if answer[0] == "error":
            raise ModelError(answer[2], reason=answer[1])
        _, embeddings, mismatch, covers = answer
        return EncodeResult(embeddings, mismatch, covers)

    def encode(self, images: np.ndarray, titles: Sequence[str]) -> EncodeResult:
        """As :meth:`Encoder.encode`; batches above the shared block's capacity are split."""
        size = self.image_spec.size
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ModelError(
                f"images must be [N, 3, {size}, {size}], got {list(images.shape)}",
                reason="bad_input",
            )
        if len(titles) != images.shape[0]:
            raise ModelError(
                f"{images.shape[0]} images but {len(titles)} titles", reason="bad_input"
            )
        titles = list(titles)
        with self._lock:
            step = self.capacity
            parts = [
                self._call(images[start : start + step], titles[start : start + step])
                for start in range(0, max(1, images.shape[0]), step)
            ]
        if len(parts) == 1:
            return parts[0]
        covers = [p.image_vectors for p in parts]
        return EncodeResult(
            np.concatenate([p.embeddings for p in parts]),
            np.concatenate([p.mismatch for p in parts]),
            None if covers[0] is None else np.concatenate(covers),  # type: ignore[arg-type]
        )

    def _release(self) -> None:
        self._pixels = np.zeros(0, np.float32)
        self._block.close()
        self._block.unlink()

    def close(self) -> None:
        """Stop the child and free the shared block."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.send(("stop",))
                self._process.join(10)
                if self._process.is_alive():
                    self._process.kill()
                    self._process.join()
                self._conn.close()
                self._process = self._conn = None
            if self._pixels.size:
                self._release()


def open_encoder(
    model_dir: Path | str,
    *,
    own_process: bool,
    intra_op_threads: int | None = None,
    capacity: int = 64,
) -> BatchEncoder:
    """The towers of ``model_dir``, in a child process or in this one."""
    if own_process:
        return EncoderProcess(model_dir, intra_op_threads=intra_op_threads, capacity=capacity)
    return Encoder.load(model_dir, intra_op_threads=intra_op_threads)


__all__ = ["EncoderProcess", "open_encoder"]
