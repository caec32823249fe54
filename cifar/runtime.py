"""Where and how tensors run: device, precision, seeding."""

from __future__ import annotations

import contextlib
import os
import platform
import random

import numpy as np
import torch

from cifar.config import TrainConfig
from cifar.errors import ConfigError


def configure_runtime(config: TrainConfig) -> tuple[torch.device, str]:
    """The device and precision train.* asks for, with kernels as deterministic as it asks:
    what every stage that runs the model sets up first."""
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    make_deterministic(config.deterministic)
    return device, precision


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested == "bf16" and device.type != "cuda":
        raise ConfigError("train.precision = 'bf16' needs train.device to be a CUDA GPU; use 'auto' or 'fp32' on CPU")
    if requested == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return requested


def autocast(device: torch.device, precision: str):
    """Mixed precision for the forward pass; a no-op in fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it times that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_deterministic(enabled: bool) -> None:
    """Pick only deterministic kernels (or none of that guarantee, for speed).

    cuDNN's autotuner chooses kernels by timing, so it stays off when deterministic; cuBLAS
    reads its workspace setting at its first call, so it is set before any CUDA work.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: an op with no deterministic CUDA kernel names itself in the log instead of
    # stopping a run; the models avoid the ones known to lack one (adaptive pooling).
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def environment(device: torch.device, precision: str) -> dict:
    """What ran a stage: recorded beside its outputs, never among the metrics."""
    return {
        "device": device_name(device),
        "precision": precision,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python": platform.python_version(),
    }


# Settings that choose the CPU kernels of ATen, oneDNN (convolutions) and MKL (matmuls), each
# of which sums in its own order: a checkpoint written under ONEDNN_MAX_CPU_ISA=AVX2 was
# resumed without it (ATen's level the same), and the model matched neither run.
CPU_KERNEL_SETTINGS = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "DNNL_DEFAULT_FPMATH_MODE",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_DEBUG_CPU_TYPE",
)


def cpu_kernels() -> dict:
    """What picks the CPU's kernels: ATen's level, the settings above, and the processor, whose
    instructions (AMX, say) oneDNN picks by without any setting."""
    return {
        "aten": torch.backends.cpu.get_cpu_capability(),
        "processor": processor_model(),
        "settings": {name: os.environ[name] for name in CPU_KERNEL_SETTINGS if name in os.environ},
    }


def gpu_kernels(device: torch.device) -> dict:
    return {
        "gpu": torch.cuda.get_device_name(device),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def processor_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
