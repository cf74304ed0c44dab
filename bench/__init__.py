"""Benchmark harness: fake upstream, bare proxy floor, load generator and orchestrator."""
