"""import arc keeps freed blocks for reuse (glibc), so a loop of fresh 1 MiB tensors stops page-faulting."""
import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, torch, arc
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.ones(512, 512)
before = faults()
for _ in range(200):
    torch.ones(512, 512)  # 1 MiB, freed at once
print(faults() - before)
"""


def _faults(env: dict) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_blocks_are_reused_unless_the_user_set_malloc_options():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    tuned = _faults(env)
    default = _faults({**env, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})  # the user's setting wins
    assert default > 200 * 100 and tuned * 10 < default  # 256 pages a tensor without reuse
