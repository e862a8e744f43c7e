"""Latency measurement: LiteRT (or spruce's engine) on this machine, or a phone over adb;
per-operator profiles on spruce's engine."""

from spruce.bench.adb import adb_benchmark, parse_benchmark_output
from spruce.bench.local import benchmark
from spruce.bench.profiler import ProfileReport, profile
from spruce.bench.report import BenchReport

__all__ = ["BenchReport", "ProfileReport", "adb_benchmark", "benchmark", "parse_benchmark_output", "profile"]
