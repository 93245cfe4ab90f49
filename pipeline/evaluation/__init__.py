"""Evaluation: does each character still sound like itself? (`python -m pipeline.eval`)

classifier: who-said-it, trained on the canon's attributed lines.
metrics:    per-character numbers for a set of replies.
report:     report.md, PNG charts, metrics.json, and the comparison of two runs.
"""
