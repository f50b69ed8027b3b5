"""Benchmarks of the agent: `cielr eval SUITE` (or `python -m cielr_agent.evals SUITE`); see evals/README.md.

Modules: `runner` (resumable loop, CLI), `harness` (run context, one edit with failures captured, gallery
images), `metrics` (plain metric functions), `report` (report.md, summary.json, gallery.html), and one module per
suite: `reason_edit`, `complexbench`, `magicbrush`, `reasoning_local`, `speed`.
"""
