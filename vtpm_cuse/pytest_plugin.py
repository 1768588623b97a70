"""pytest fixtures for projects that test against a vTPM (the ``pytest11`` entry point).

``vtpm``: a fresh, started TPM for each test; ``vtpm_module``: one per test module.
Both are :class:`vtpm_cuse.testing.RunningVtpm` (``.tcti``, ``.data_port``, ``.ctrl_port``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import RunningVtpm, running_vtpm


@pytest.fixture
def vtpm() -> Iterator[RunningVtpm]:
    with running_vtpm() as tpm:
        yield tpm


@pytest.fixture(scope="module")
def vtpm_module() -> Iterator[RunningVtpm]:
    with running_vtpm() as tpm:
        yield tpm
