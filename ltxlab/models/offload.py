"""Block-level offload of the frozen transformer to CPU, with the next block prefetched on a side stream.

Why not diffusers' group offloading: it moves *every* parameter of a block, LoRA included, and with a stream it
restores the CPU copy taken at set-up, so optimizer updates would be lost. Here only frozen tensors are offloaded and
trainable ones (LoRA) never move.

How: a frozen tensor of an offloaded block is taken out of its module (`_parameters[name] = None`, so `.to()`,
DeepSpeed and the optimizer never see it) and kept in (pinned) CPU memory. A forward pre-hook puts a device copy
back for the duration of the block's forward; the post-hook takes it out again. Autograd holds the copies it saved
for backward, so each copy lives exactly as long as it is needed: with gradient checkpointing (which offload
assumes) only the block being computed or recomputed holds its weights on the GPU. The next block in the direction
of travel (forward: i+1; checkpoint recompute during backward: i-1) is copied on a side CUDA stream meanwhile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    module: nn.Module
    name: str
    is_buffer: bool
    host: torch.Tensor  # the offloaded tensor (pinned when the device is CUDA)


@dataclass
class _Block:
    slots: list[_Slot] = field(default_factory=list)
    prefetched: list[torch.Tensor] | None = None
    ready: torch.cuda.Event | None = None


def _pinned(tensor: torch.Tensor) -> torch.Tensor:
    """Page-locked host memory makes the copies asynchronous; a tensor type that cannot be pinned (some quantized
    tensor subclasses) is copied synchronously instead."""
    try:
        return tensor.pin_memory()
    except (NotImplementedError, RuntimeError):
        return tensor


class BlockOffloader:
    """Keeps the frozen weights of ``blocks`` on the host and streams them to ``device`` block by block."""

    def __init__(self, blocks: nn.ModuleList, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.blocks = [self._take_out(block) for block in blocks]
        self._last: int | None = None
        self._attached: set[int] = set()
        self._handles = []
        for index, block in enumerate(blocks):
            self._handles.append(block.register_forward_pre_hook(self._pre_hook(index)))
            self._handles.append(block.register_forward_hook(self._post_hook(index)))

    def _take_out(self, block: nn.Module) -> _Block:
        state = _Block()
        for module in block.modules():
            for is_buffer, table in ((False, module._parameters), (True, module._buffers)):
                for name, tensor in list(table.items()):
                    if tensor is None or (not is_buffer and tensor.requires_grad):
                        continue
                    host = tensor.detach().to("cpu")
                    if self.cuda:
                        host = _pinned(host)
                    state.slots.append(_Slot(module, name, is_buffer, host))
                    table[name] = None
        return state

    def _copies(self, state: _Block) -> list[torch.Tensor]:
        # On CPU the copy is a real clone, so tests exercise the same put-back/take-out path as CUDA.
        if self.cuda:
            return [slot.host.to(self.device, non_blocking=True) for slot in state.slots]
        return [slot.host.clone() for slot in state.slots]

    def _prefetch(self, index: int) -> None:
        if not (self.cuda and 0 <= index < len(self.blocks)):
            return
        state = self.blocks[index]
        if state.prefetched is not None:
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            state.prefetched = self._copies(state)
            state.ready = torch.cuda.Event()
            state.ready.record(self.stream)

    def _pre_hook(self, index: int):
        def hook(_module: nn.Module, _args) -> None:
            state = self.blocks[index]
            if state.prefetched is not None:
                torch.cuda.current_stream(self.device).wait_event(state.ready)
                copies, state.prefetched, state.ready = state.prefetched, None, None
                for copy in copies:  # allocated on the side stream, used on the main one
                    copy.record_stream(torch.cuda.current_stream(self.device))
            else:
                copies = self._copies(state)
            # A checkpoint recompute stops as soon as backward has what it needs, so the post-hook of the block
            # recomputed last may not have run: take its copies out now (autograd keeps what it still needs).
            for other in self._attached - {index}:
                self._detach(other)
            for slot, copy in zip(state.slots, copies, strict=True):
                table = slot.module._buffers if slot.is_buffer else slot.module._parameters
                table[slot.name] = copy if slot.is_buffer else nn.Parameter(copy, requires_grad=False)
            self._attached.add(index)
            backward = self._last is not None and index < self._last
            self._last = index
            self._prefetch(index - 1 if backward else index + 1)

        return hook

    def _detach(self, index: int) -> None:
        for slot in self.blocks[index].slots:
            table = slot.module._buffers if slot.is_buffer else slot.module._parameters
            table[slot.name] = None
        self._attached.discard(index)

    def _post_hook(self, index: int):
        def hook(_module: nn.Module, _args, _output) -> None:
            self._detach(index)

        return hook

    def attached_blocks(self) -> set[int]:
        """Blocks whose device copies are currently in the model (at most one between steps)."""
        return set(self._attached)

    def host_bytes(self) -> int:
        return sum(slot.host.numel() * slot.host.element_size() for b in self.blocks for slot in b.slots)

    def remove(self) -> None:
        """Put every frozen tensor back (on the host) and drop the hooks."""
        for handle in self._handles:
            handle.remove()
        for state in self.blocks:
            for slot in state.slots:
                table = slot.module._buffers if slot.is_buffer else slot.module._parameters
                table[slot.name] = slot.host if slot.is_buffer else nn.Parameter(slot.host, requires_grad=False)


def offload_blocks(transformer: nn.Module, device: torch.device) -> BlockOffloader:
    """Offload the frozen weights of ``transformer.transformer_blocks`` and move the rest to ``device``."""
    offloader = BlockOffloader(transformer.transformer_blocks, device)
    transformer.to(device)  # what is left: LoRA, embeddings, projections (offloaded tensors are out of reach)
    transformer._ltxlab_offloader = offloader  # keep it alive with the model
    log.info("offload: %.2f GB of frozen block weights kept on the host", offloader.host_bytes() / 1e9)
    return offloader
