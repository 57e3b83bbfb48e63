"""Which torch device a step runs on: one resolver for every module.

``"auto"`` is CUDA when a GPU is visible, else the CPU; ``"cpu"``; ``"cuda"`` / ``"cuda:i"``.
Asking for a GPU that is not there is an error with the reason, never a silent CPU run.
"""

from __future__ import annotations


class DeviceError(RuntimeError):
    """The requested device does not exist on this machine."""


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here (one line), or None when it can."""
    import torch

    if device in ("auto", "cpu"):
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        return f"device {device!r} is not a torch device ({exc}); use auto, cpu or cuda[:i]"
    if dev.type == "cpu":
        return None
    if dev.type != "cuda":
        return f"device {device!r}: only auto, cpu and cuda[:i] are supported"
    if not torch.cuda.is_available():
        return (f"device {device!r} asked for, but no CUDA device is visible "
                "(torch.cuda.is_available() is False); use --device cpu or auto")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        return (f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible")
    return None


def resolve_device(device: str = "auto"):
    """The ``torch.device`` for ``device`` (see the module docstring); DeviceError if absent."""
    import torch

    problem = device_problem(device)
    if problem:
        raise DeviceError(problem)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
