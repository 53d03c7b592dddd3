"""Benchmark readers, prompts, answer extraction and metrics for ERNIE-4.5-VL batch evaluation.

(Contract summary is completed as the package grows; see evals.sample for the record.)
"""
