"""Every report and benchmark records where its numbers came from, through one function."""

import re

import torch

from mifpe_plugins.provenance import provenance


def test_provenance_names_code_machine_libraries_and_date():
    record = provenance("mifpe table2 --n 8")
    assert record["command"] == "mifpe table2 --n 8" and record["torch"] == torch.__version__
    assert torch.__version__.startswith(record["libraries"]["torch"])  # metadata drops the local +cu130
    assert record["commit"] is None or re.fullmatch(r"[0-9a-f]{4,40}(\+dirty)?", record["commit"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", record["date"])
    assert "cores" in record["machine"] and "torch threads" in record["machine"]


def test_benchmarks_use_the_same_record():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_core import machine_info

    info = machine_info()
    assert info["libraries"] == provenance()["libraries"] and info["git_commit"] == (
        (provenance()["commit"] or "").removesuffix("+dirty") or None)
