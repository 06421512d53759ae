"""Latency and accuracy of artifacts, comparison with the baseline, reports and the regression gate.

Works on artifacts alone through `runtime/`: no torch needed.
"""
