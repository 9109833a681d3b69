"""Attribution over many questions split across processes (and GPUs), merged through the score cache.

Launch the same command once per process; each scores only its share of the questions,
writes them to the shared per-question cache (`Store`), then reads the others' scores
from it, so every process ends with the scores of all questions, equal to one process's:

    accelerate launch --num_processes 4 -m neuronloc.cli attribute --task neuronllm/sentiment --method ace
    torchrun --nproc_per_node 4 -m neuronloc.cli attribute ...      # the same, without accelerate

Both launchers set RANK, WORLD_SIZE and LOCAL_RANK; `Shard.current()` reads them, and
`models.check_device("auto")` puts process LOCAL_RANK on cuda:LOCAL_RANK. No process group
is needed (the cache folder is the only thing shared), so several machines work too when
results/<slug>/cache/ is on a shared file system. Question i belongs to process
i % WORLD_SIZE; a process that finishes first waits for the others' files (`gather`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from tqdm.auto import tqdm


@dataclass(frozen=True)
class Shard:
    """Process `rank` of `world`."""

    rank: int = 0
    world: int = 1

    def __post_init__(self):
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"process rank {self.rank} of {self.world}: need 0 <= RANK < WORLD_SIZE")

    @classmethod
    def current(cls) -> "Shard":
        """This process's shard from the launcher's RANK / WORLD_SIZE (one process when unset)."""
        try:
            return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))
        except ValueError as err:
            if "invalid literal" in str(err):
                raise ValueError(f"RANK={os.environ.get('RANK')!r}, WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}: "
                                 "both must be integers") from None
            raise

    def mine(self, n: int) -> list[int]:
        """Indices of the items (of n) this process computes: i % world == rank."""
        return list(range(self.rank, n, self.world))

    @property
    def main(self) -> bool:
        """The process that writes shared outputs (rank 0)."""
        return self.rank == 0


def local_device() -> str | None:
    """cuda:LOCAL_RANK under a multi-process launcher, else None (the usual choice)."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return None


def gather(store, keys: list[str], timeout: float | None = None, poll: float = 2.0, progress: bool = True) -> list:
    """The stored objects of `keys`, waiting for other processes to write them.

    timeout: seconds to wait for the last missing key (None = $NEURONLOC_GATHER_TIMEOUT,
    default 24 h: another process may be scoring a slow question); RuntimeError after it.
    """
    if timeout is None:
        timeout = float(os.environ.get("NEURONLOC_GATHER_TIMEOUT", 24 * 3600))
    miss = object()
    out = [miss] * len(keys)
    deadline = time.monotonic() + timeout
    with tqdm(total=len(keys), desc="gather", disable=not progress, leave=False) as bar:
        while True:
            found = 0
            for i, k in enumerate(keys):
                if out[i] is miss:
                    out[i] = store.get(k, miss)
                    found += out[i] is not miss
            bar.update(found)
            missing = sum(o is miss for o in out)
            if not missing:
                return out
            if time.monotonic() > deadline:
                raise RuntimeError(f"{missing} of {len(keys)} question scores never appeared in {store.root} within "
                                   f"{timeout:.0f} s: did another process fail? Re-run it; finished scores are kept")
            time.sleep(poll)


__all__ = ["Shard", "gather", "local_device"]
