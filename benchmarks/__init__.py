"""Side-by-side measurements: rayformers against the code a user would otherwise run, in the same run.

`make bench` runs them all (`python -m benchmarks.run`); each also runs alone
(`python -m benchmarks.run classifier`). Results go to `benchmarks/results/`.
"""
