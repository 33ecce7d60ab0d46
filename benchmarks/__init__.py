"""Timing and throughput measurements (``make bench``), kept out of the test suite.

Each ``bench_<topic>.py`` module defines ``run() -> list[Result]``; every result compares a
measured quantity against a named reference measured in the same run and prints the ratio.
"""
