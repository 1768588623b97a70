"""Coverage-guided fuzz targets (atheris / libFuzzer) and the interface they share.

A target is one module ``tests/fuzz/target_<name>.py``; nothing registers it, the
runner (``scripts/fuzz.py``) and the CI short run (``tests/test_fuzz_targets.py``)
find it by its file name.  It defines:

``def fuzz_one(data: bytes) -> None``
    Runs one input through the code under test and checks its oracles.  It raises
    ``AssertionError`` (with a message naming what was wrong) when an oracle fails;
    any other exception escaping it is a bug found, too.  It must leave the process
    ready for the next input (recreate what an input may have broken), must not
    print, and must bound its own real time (a hang is a libFuzzer timeout).

``def seeds() -> Iterable[bytes]``
    Valid inputs that reach the interesting paths: they start every working corpus
    and each of them must pass ``fuzz_one``.

Optional module constants, read by the runner with these defaults:

``MAX_LEN: int = 4096``
    libFuzzer's ``-max_len``: the longest input it generates.
``TIMEOUT_SECONDS: int = 10``
    libFuzzer's ``-timeout``: one input taking longer is reported as a hang.
``INSTRUMENT: tuple[str, ...] = ("vtpm_cuse", "ioctl_defs")``
    The top-level packages whose code atheris instruments for coverage.

The committed corpus lives in ``tests/fuzz/corpus/<name>/`` (tens of files of a few KB;
every file must pass ``fuzz_one``; a crash once found and fixed is committed there as
its regression test, named ``crash-<what>``).  Modules are imported as
``tests.fuzz.target_<name>`` with the repository root on ``sys.path`` (and ``tests/``
too, so ``support`` resolves as it does under pytest).

Shared helpers live in :mod:`tests.fuzz.harness` (the atheris entry point, the
TPM response oracles, the memory bound).  Running:

    .venv/bin/python scripts/fuzz.py --target engine --seconds 60
    .venv/bin/python scripts/fuzz.py --target all --seconds 1800 --jobs 2
    .venv/bin/python scripts/fuzz.py --target engine --replay crash-0123abcd
"""
