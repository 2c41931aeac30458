"""The training random streams (σ, noise and first-frame draws), one per batch slot.

Slot ``m·W + r`` is micro-batch ``m`` of rank ``r`` (world W), the same slot ``ShardBatches`` gives that
micro-batch's samples. Ranks therefore draw differently (an all-ranks-identical σ/noise is a known multi-GPU bug
in other trainers), every draw is reproducible from the seed, and runs that fill a step the same way draw the
same: 2 ranks × accumulation 1 and 1 rank × accumulation 2 see the same samples with the same noise. With one
micro-batch per step, slot = rank: the stream of rank r is seeded ``seed·1000 + r``. Checkpoints hold every slot's
stream (gathered to rank 0, whose client state DeepSpeed keeps), so each rank resumes its own.
"""

from __future__ import annotations

import torch

from ltxlab import distributed


class SlotStreams:
    def __init__(self, seed: int, rank: int, world_size: int, accumulation: int) -> None:
        self.slots = [m * world_size + rank for m in range(accumulation)]  # this rank's slot per micro-batch
        self.total_slots = world_size * accumulation
        self.generators = [torch.Generator().manual_seed(seed * 1000 + slot) for slot in self.slots]

    def __getitem__(self, micro: int) -> torch.Generator:
        """The stream of this rank's micro-batch ``micro`` within an optimizer step."""
        return self.generators[micro]

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        """Every slot's state, gathered from all ranks (collective: call it on every rank). DeepSpeed keeps the
        client state of rank 0 only, so each rank's own streams must be in it."""
        gathered = distributed.all_gather_object(list(zip(self.slots, [g.get_state() for g in self.generators],
                                                          strict=True)))
        by_slot = dict(pair for pairs in gathered for pair in pairs)
        return {"slots": [by_slot[slot] for slot in range(self.total_slots)]}

    def load_state_dict(self, state: dict[str, list[torch.Tensor]]) -> None:
        slots = state["slots"]
        if len(slots) != self.total_slots:
            raise ValueError(f"the checkpoint holds {len(slots)} random streams (ranks × accumulation), this run "
                             f"needs {self.total_slots}: resume with the same ranks × accumulation")
        for generator, slot in zip(self.generators, self.slots, strict=True):
            generator.set_state(slots[slot])
