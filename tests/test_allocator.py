import subprocess
import sys
import textwrap

import pytest


# Twelve rounds of what a forward pass does, allocating and freeing temporaries of 64, 32 and 16 MB (two alive at a
# time); prints the minor page faults of each round.
FAULTS_PER_ROUND = textwrap.dedent(
    """
    import resource, sys
    import torch
    from lyra_hf.allocator import retain_freed_memory

    if sys.argv[1] == "retain":
        assert retain_freed_memory()
    faults = []
    for _ in range(12):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        first = torch.ones(16 * 1024 * 1024)
        second = torch.ones(8 * 1024 * 1024)
        del first
        third = torch.ones(4 * 1024 * 1024)
        del second, third
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(*faults)
    """
)


def faults_per_round(mode):
    completed = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_ROUND, mode], capture_output=True, text=True, check=True
    )
    return [int(value) for value in completed.stdout.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    pages = 64 * 1024 * 1024 // 4096
    default, retained = faults_per_round("default"), faults_per_round("retain")
    # By default every round maps fresh memory and faults pages in again (seen: at least half of 64 MB every round).
    assert all(count > pages / 4 for count in default), default
    # Retained: the heap grows over the first rounds (up to six, seen), then the rounds reuse it.
    assert retained[0] > pages and all(count < pages / 20 for count in retained[-4:]), retained
