"""Benchmarks, run from the repository root as ``python -m benchmarks.<name>``.

A regular package (not a namespace one) on purpose: pysbd, a dependency of
coqui-tts, installs a stray top-level ``benchmarks`` package that would
otherwise shadow this folder.
"""
