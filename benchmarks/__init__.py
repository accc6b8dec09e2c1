"""mncd's benchmark: the real stack (isolated pcscd + vpcd + virtual card, private bus, daemon).

Run ``python -m benchmarks`` from the repository root. Every figure is a ratio against a baseline
measured in the same run; see ``docs/performance.md``.
"""
