"""Shared test settings: the report header names the CPU the suite ran on."""

import platform


def pytest_report_header(config):
    import torch

    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return [f"CPU: {model}; torch {torch.__version__}, CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}"]
