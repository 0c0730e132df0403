"""Training throughput, peak memory, FLOPs and MFU of one experiment config.

    python benchmarks/throughput.py --config configs/experiments/quickstart.yaml
    python benchmarks/throughput.py --config CFG --accelerator gpu --precision bf16-mixed
    python benchmarks/throughput.py --config CFG --data.num_workers=8  # any CLI override
    python benchmarks/throughput.py --config CFG --profile 25  # + the 25 costliest operators
    python benchmarks/throughput.py --config CFG --devices 2 --strategy fsdp  # sharded

Any argument the script does not know is a CLI override (``--key=value``), as
for ``vlp fit``. How each number is measured, and why this way:

- The model and data module come from the real CLI (``run_cli(..., run=False)``),
  so the benchmark builds exactly what ``vlp fit --config CFG`` builds.
- Data: batches are read from the config's train loader and kept in memory on
  the training device; the time to read them (first batch, which pays for
  worker start-up, excluded) gives the data-loading rate. Training then cycles
  through them, so the training rate never waits on data.
- Training runs under ``Trainer.fit`` with the config's trainer settings (precision,
  clipping, accumulation, logging cadence) on one device, for one epoch of
  W + N batches, no validation, logger or checkpoints. A callback times
  batch start to batch end, so a step is exactly what fit does: every
  objective's ``training_step``, backward, ``optimizer.step()``, the LR scheduler,
  EMA teacher updates and ``self.log``. We chose fit over a hand-written loop
  because ``self.log``, ``configure_optimizers`` (it reads
  ``trainer.estimated_stepping_batches``) and the EMA hook in ``optimizer_step``
  all need a live trainer; a hand loop would re-implement them and measure
  something else. Throughput = N × batch size / (end of step W+N − start of step W+1).
- FLOPs: ``FlopCounterMode`` around the first warm-up step (never timed):
  forward + backward of matmuls, convolutions and attention (torch's formulas,
  which we also register for the CPU flash-attention kernel torch leaves out);
  elementwise work and the optimizer are not counted, as in the usual MFU definition.
- Peak: the best of R timed ``torch.mm`` of S×S matrices in the training dtype
  (bf16/fp16 for mixed precision) on the training device with the same threads,
  measured before and after training; MFU = achieved FLOP/s / that peak.
- Memory: on CUDA ``torch.cuda.max_memory_allocated`` during fit; on CPU the
  peak resident set during fit minus the resident set before it (Linux VmHWM,
  reset through ``/proc/self/clear_refs``; elsewhere the growth of ``ru_maxrss``,
  a lower bound).
- Several processes (``--devices N``, ``--strategy ddp`` or ``fsdp``, the latter
  Lightning's ``ModelParallelStrategy`` through ``vlp.sharding``): each rank trains on
  the same preloaded batches; samples/s counts every rank's, and memory is rank 0's.
  Model state per rank is what that rank keeps between steps: its parameters (its
  shards under FSDP), their gradients and the optimizer state, counted from the tensors
  after the last step; it is what sharding divides by N. (``fsdp`` on one device splits
  nothing, but runs the sharded code: a smoke test of it on one GPU.)
- Profile (``--profile K``): ``torch.profiler`` over the timed steps, the K operators
  with the most self time (CUDA time on a GPU, else CPU time). The profiler slows the
  steps it records, so the timings of a profiled run are not the table's to report.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import Callback, LightningModule, Trainer
from rich.console import Console
from rich.table import Table
from torch.distributed.tensor import DTensor
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from vlp.cli import run_cli
from vlp.datamodules.mixture import step_rows
from vlp.sharding import sharding_strategy

MATMUL_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}
STRATEGIES = {
    "auto": lambda devices: "auto",
    "ddp": lambda devices: "ddp",
    "fsdp": sharding_strategy,
}


Shape = tuple[int, ...]


def _cpu_attention_flops(query: Shape, key: Shape, value: Shape, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward_flops(
    grad_out: Shape, query: Shape, key: Shape, value: Shape, *args: Any, **kwargs: Any
) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's counter knows the CUDA attention kernels but not the CPU flash kernel that
# F.scaled_dot_product_attention runs on CPU; without these, CPU attention counts 0 FLOPs.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        _cpu_attention_backward_flops
    ),
}


@dataclass(frozen=True)
class ThroughputResult:
    """One benchmark run; ``*_per_s`` are images per second."""

    config: str
    device: str
    precision: str
    threads: int
    batch_size: int
    trainable_params: int
    total_params: int
    warmup: int
    steps: int
    train_samples_per_s: float
    step_time_s: float
    cpu_cores_busy: float
    data_samples_per_s: float
    flops_per_step: int
    achieved_flops_per_s: float
    peak_flops_per_s: float
    peak_matmul: str
    mfu: float
    peak_memory_bytes: int
    memory_kind: str
    strategy: str
    devices: int
    state_bytes_per_rank: int
    rank: int = 0
    profile: str = ""  # the operator table of --profile


class StepTimer(Callback):
    """Counts FLOPs on batch 0 and times batches ``warmup`` … ``warmup + steps − 1``.

    It also takes the process's CPU time over the timed steps: well under
    ``threads`` cores busy on CPU means other processes shared the cores.
    """

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.first, self.last = warmup, warmup + steps - 1
        self.device = device
        self.counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
        self.flops = 0
        self.elapsed = 0.0
        self.cpu_seconds = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            self.counter.__enter__()
        if batch_idx == self.first:
            self.start, self.cpu_start = self._now(), _cpu_seconds()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            self.counter.__exit__(None, None, None)
            self.flops = self.counter.get_total_flops()
        if batch_idx == self.last:
            self.elapsed = self._now() - self.start
            self.cpu_seconds = _cpu_seconds() - self.cpu_start


class OpProfile(Callback):
    """``torch.profiler`` over steps ``warmup`` … ``warmup + steps − 1``: where a step's time goes."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        # the last untimed step warms the profiler up; it records the timed ones
        schedule = torch.profiler.schedule(wait=warmup - 1, warmup=1, active=steps, repeat=1)
        self.profiler = torch.profiler.profile(activities=activities, schedule=schedule)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.profiler.start()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.profiler.step()

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.profiler.stop()

    def table(self, rows: int) -> str:
        return self.profiler.key_averages().table(sort_by=self.sort_by, row_limit=rows)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class PeakMemory:
    """Peak memory during a block: CUDA allocator peak, or CPU resident-set growth."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.proc = False
        self.kind = "CUDA max_memory_allocated" if device.type == "cuda" else ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # Linux: resets VmHWM to the current RSS
            self.proc, self.kind = True, "CPU peak RSS increase (VmHWM)"
            self.before = _proc_status_bytes("VmRSS")
        except OSError:
            self.kind = "CPU peak RSS increase (ru_maxrss growth, lower bound)"
            self.before = _ru_maxrss_bytes()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self.proc:
            self.peak = _proc_status_bytes("VmHWM") - self.before
        else:
            self.peak = _ru_maxrss_bytes() - self.before


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _ru_maxrss_bytes() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """FLOP/s of the fastest of ``repeats`` S×S ``torch.mm`` calls."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    out = torch.mm(a, b)  # warm-up: kernel selection, page faults
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def preload(loader: Any, count: int, device: torch.device) -> tuple[list[Any], float]:
    """``count`` batches from ``loader`` on ``device``, and the loader's samples/s
    (images, or a mixture's images, documents and clips)."""
    batches, iterator, start = [], iter(loader), 0.0
    for index in range(count):
        try:
            batch = next(iterator)
        except StopIteration:  # a small split: start another epoch
            iterator = iter(loader)
            batch = next(iterator)
        if index == 0:
            start = time.perf_counter()
        # a mixture's CombinedLoader yields (batches by dataset, index, loader index)
        batches.append(batch[0] if isinstance(batch, tuple) else batch)
    elapsed = time.perf_counter() - start
    samples = sum(step_rows(b) for b in batches[1:])
    return [move_data_to_device(b, device) for b in batches], samples / elapsed


class Cycle:
    """``length`` batches cycling through ``batches`` (a list would be read as many loaders)."""

    def __init__(self, batches: list[Any], length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Any]:
        return (self.batches[i % len(self.batches)] for i in range(self.length))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        model = "unknown"
    return f"cpu ({model})"


def bench_trainer(
    device: torch.device, batches: int, callbacks: list[Callback], devices: int, strategy: str
) -> dict[str, Any]:
    """Trainer settings replacing the config's: ``devices`` processes, one short epoch,
    nothing written."""
    return {
        "accelerator": device.type,
        "devices": [device.index or 0] if device.type == "cuda" and devices == 1 else devices,
        "num_nodes": 1,
        "strategy": STRATEGIES[strategy](devices),
        "max_epochs": 1,
        "min_epochs": None,
        "max_steps": -1,
        "min_steps": None,
        "max_time": None,
        "fast_dev_run": False,
        "overfit_batches": 0.0,
        "limit_train_batches": batches,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "logger": False,
        "callbacks": callbacks,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "profiler": None,
    }


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    # No abbreviations: ``--data=...`` is a CLI override, not ``--data-batches``.
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--config", required=True, help="experiment YAML, as for `vlp fit`")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps (N)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (W ≥ 1)")
    parser.add_argument("--batch-size", type=int, help="override data.batch_size")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--accelerator", help="shorthand for --trainer.accelerator")
    parser.add_argument("--precision", help="shorthand for --trainer.precision, e.g. bf16-mixed")
    parser.add_argument("--data-batches", type=int, default=16, help="distinct batches preloaded")
    parser.add_argument("--peak-size", type=int, help="matmul side S (2048 CPU, 8192 GPU)")
    parser.add_argument("--peak-repeats", type=int, default=5, help="matmul repeats R")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="K", help="print the K costliest operators"
    )
    parser.add_argument("--devices", type=int, default=1, help="processes (N)")
    parser.add_argument(
        "--strategy", choices=sorted(STRATEGIES), default="auto", help="with several devices"
    )
    args, overrides = parser.parse_known_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.data_batches < 2:
        parser.error("--steps and --warmup must be ≥ 1 and --data-batches ≥ 2")
    return args, overrides


def run(argv: list[str] | None = None) -> ThroughputResult:
    """Build the config through the CLI, measure it; see the module docstring."""
    args, overrides = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for key, value in (
        ("data.batch_size", args.batch_size),
        ("trainer.accelerator", args.accelerator),
        ("trainer.precision", args.precision),
    ):
        if value is not None:
            overrides.append(f"--{key}={value}")
    with warnings.catch_warnings():  # it warns when sys.argv also has arguments: by design here
        warnings.filterwarnings("ignore", "LightningCLI's args parameter")
        cli = run_cli(["--config", args.config, *overrides], run=False)
    device, precision = cli.trainer.strategy.root_device, str(cli.trainer.precision)
    if device.type == "cpu" and not precision.startswith("32"):
        raise SystemExit(
            f"refusing precision {precision!r} on CPU: this benchmark runs CPU in fp32"
        )
    dtype = next((d for p, d in MATMUL_DTYPES.items() if precision.startswith(p)), torch.float32)
    peak_size = args.peak_size or (8192 if device.type == "cuda" else 2048)

    cli.datamodule.check_needs(cli.model.batch_needs)
    batches, data_rate = preload(cli.datamodule.train_dataloader(), args.data_batches, device)
    peak = matmul_peak(device, dtype, peak_size, args.peak_repeats)

    total = args.warmup + args.steps  # FLOPs are counted on warm-up step 0
    timer = StepTimer(args.warmup, args.steps, device)
    profiler = OpProfile(args.warmup, args.steps, device) if args.profile else None
    callbacks = [timer] + ([profiler] if profiler else [])
    settings = bench_trainer(device, total, callbacks, args.devices, args.strategy)
    trainer = Trainer(**{**vars(cli.config_init["trainer"]), **settings})
    with PeakMemory(device) as memory:
        trainer.fit(cli.model, train_dataloaders=Cycle(batches, total))
    if timer.elapsed == 0.0:
        raise RuntimeError(f"fit stopped before step {total}: nothing was timed")
    peak = max(peak, matmul_peak(device, dtype, peak_size, args.peak_repeats))

    batch_size = step_rows(batches[0]) * trainer.world_size
    achieved = timer.flops * args.steps / timer.elapsed
    params = list(cli.model.parameters())
    return ThroughputResult(
        config=args.config,
        device=device_name(device),
        precision=precision,
        threads=torch.get_num_threads(),
        batch_size=batch_size,
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_params=sum(p.numel() for p in params),
        warmup=args.warmup,
        steps=args.steps,
        train_samples_per_s=args.steps * batch_size / timer.elapsed,
        step_time_s=timer.elapsed / args.steps,
        cpu_cores_busy=timer.cpu_seconds / timer.elapsed,
        data_samples_per_s=data_rate,
        flops_per_step=timer.flops,
        achieved_flops_per_s=achieved,
        peak_flops_per_s=peak,
        peak_matmul=f"{peak_size}x{peak_size} {str(dtype).removeprefix('torch.')} mm",
        mfu=achieved / peak,
        peak_memory_bytes=memory.peak,
        memory_kind=memory.kind,
        strategy=type(trainer.strategy).__name__,
        devices=trainer.world_size,
        state_bytes_per_rank=state_bytes(trainer),
        rank=trainer.global_rank,
        profile=profiler.table(args.profile) if profiler else "",
    )


def state_bytes(trainer: Trainer) -> int:
    """Bytes of this rank's parameters, gradients and optimizer state (its shards under FSDP)."""
    module = trainer.lightning_module
    tensors = [t for p in module.parameters() for t in (p, p.grad) if t is not None]
    tensors += [
        value
        for optimizer in trainer.optimizers
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    ]
    return sum(_local(t).numel() * t.element_size() for t in tensors)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def table(result: ThroughputResult) -> Table:
    r = result
    rows = [
        ("config", r.config),
        ("device", r.device),
        ("precision", r.precision),
        ("threads", str(r.threads)),
        ("processes (strategy)", f"{r.devices} ({r.strategy})"),
        ("batch size (all processes)", str(r.batch_size)),
        (
            "params (trainable / total)",
            f"{r.trainable_params / 1e6:.2f} M / {r.total_params / 1e6:.2f} M",
        ),
        ("steps (warm-up + timed)", f"{r.warmup} + {r.steps}"),
        ("train samples/s", f"{r.train_samples_per_s:,.1f}"),
        ("step time", f"{r.step_time_s * 1e3:,.1f} ms"),
        ("CPU cores busy in timed steps", f"{r.cpu_cores_busy:.2f} of {r.threads} threads"),
        ("data-loading samples/s", f"{r.data_samples_per_s:,.1f}"),
        ("model FLOPs / step (fwd+bwd)", f"{r.flops_per_step / 1e9:,.2f} GFLOP"),
        ("achieved FLOP/s", f"{r.achieved_flops_per_s / 1e9:,.1f} GFLOP/s"),
        (f"peak FLOP/s ({r.peak_matmul})", f"{r.peak_flops_per_s / 1e9:,.1f} GFLOP/s"),
        ("MFU", f"{r.mfu:.1%}"),
        (f"peak memory ({r.memory_kind})", f"{r.peak_memory_bytes / 2**20:,.0f} MiB"),
        (
            "model state per rank (params, grads, optimizer)",
            f"{r.state_bytes_per_rank / 2**20:,.1f} MiB",
        ),
    ]
    out = Table(title="vlp training throughput")
    out.add_column("metric")
    out.add_column("value", justify="right")
    for name, value in rows:
        out.add_row(name, value)
    return out


def main(argv: list[str] | None = None) -> ThroughputResult:
    result = run(argv)
    if result.rank != 0:  # each process measured; rank 0 reports
        return result
    Console().print(table(result))
    if result.profile:
        print(f"Operators by self time over the timed steps (profiled: slower):\n{result.profile}")
    return result


if __name__ == "__main__":
    main()
