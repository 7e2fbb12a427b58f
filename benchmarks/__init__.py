"""Benchmarks of pinsyncd against loopback peers: request economy, throughput, memory and
cycle time (issue 7). One command per benchmark, e.g. `python -m benchmarks.requests_per_pin`;
see benchmarks/README.md."""
