"""Latency measurement: LiteRT (or spruce's engine) on this machine, or a phone over adb."""

from spruce.bench.adb import adb_benchmark, parse_benchmark_output
from spruce.bench.local import benchmark
from spruce.bench.report import BenchReport

__all__ = ["BenchReport", "adb_benchmark", "benchmark", "parse_benchmark_output"]
