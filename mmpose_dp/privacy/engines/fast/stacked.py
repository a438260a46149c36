"""Instantiated per-sample gradients stacked across layers of one shape.

HRNet repeats the same blocks many times, so many layers have parameters
of one shape. Their per-sample gradients ``[B, *shape]`` are stacked into
one ``[B, k, *shape]`` tensor per (shape, dtype): a unit's sum, the norms
and the clipped sum are then one op per group instead of one per
parameter (fewer kernel launches; the same numbers up to summation order
inside a norm).
"""
from typing import Dict, List, Tuple

import torch

#: (layer, index of the parameter in the layer's ``params``).
Slot = Tuple[object, int]


class StackBuffer:
    """``[B, k, *shape]`` (uninitialised) whose rows the layers of one
    parameter shape fill as their per-sample gradients arrive (no copy
    afterwards); ``slots[row]`` says whose a filled row is (an unfilled
    row is zeroed when the groups are formed, and adds nothing)."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor
        self.slots: Dict[int, Slot] = {}


class StackedGradients:
    """The layers' instantiated per-sample gradients, grouped by shape.

    Takes them out of the layers (``layer.grads`` becomes ``None``), so a
    group's parameters are held once, stacked: in the buffers they were
    written into during the backward (``buffers``), the others stacked
    here.
    """

    def __init__(self, layers, buffers: Dict[tuple, StackBuffer] = None
                 ) -> None:
        #: ``(slots, [B, k, *shape])`` per group (a slot None: a zero row).
        self.groups: List[Tuple[List[Slot], torch.Tensor]] = []
        for buffer in (buffers or {}).values():
            rows = buffer.tensor.shape[1]
            for r in range(rows):
                if r not in buffer.slots:  # a layer that took no part
                    buffer.tensor[:, r].zero_()
            self.groups.append(([buffer.slots.get(r) for r in range(rows)],
                                buffer.tensor))
        members: Dict[tuple, List[Tuple[Slot, torch.Tensor]]] = {}
        for layer in layers:
            if layer.grads is None:
                continue
            if not layer.stacked:
                for k, grad in enumerate(layer.grads):
                    key = (tuple(grad.shape), grad.dtype)
                    members.setdefault(key, []).append(((layer, k), grad))
            layer.grads = None
        # One group at a time, dropping its unstacked gradients as soon as
        # it is stacked: at most one group is held twice.
        for key in list(members):
            group = members.pop(key)
            slots = [slot for slot, _ in group]
            grads = [g for _, g in group]
            group.clear()
            stacked = (grads[0].unsqueeze(1) if len(grads) == 1 else
                       torch.stack(grads, 1))
            del grads
            self.groups.append((slots, stacked))
        self.layers = {slot[0] for slots, _ in self.groups
                       for slot in slots if slot is not None}

    def norms(self, units: torch.Tensor, num_units: int,
              identity: bool) -> List[torch.Tensor]:
        """``[U, k]`` per group: each unit's gradient norm per parameter
        (a unit's samples summed first)."""
        out = []
        for _, stacked in self.groups:
            if not identity:
                per_unit = stacked.new_zeros((num_units, ) +
                                             stacked.shape[1:])
                stacked = per_unit.index_add_(0, units, stacked)
            out.append(torch.linalg.vector_norm(
                stacked.reshape(num_units, stacked.shape[1], -1), dim=2))
        return out

    def clipped_sums(self, factors) -> Dict[Slot, torch.Tensor]:
        """``sum_b factors[b] * gradient[b]`` of every stacked parameter.
        The last use of the groups: each is dropped once summed, so its
        memory is freed group by group."""
        out = {}
        while self.groups:
            slots, stacked = self.groups.pop(0)
            B, k, shape = stacked.shape[0], stacked.shape[1], stacked.shape[2:]
            summed = torch.mv(stacked.reshape(B, -1).t(),
                              factors(stacked.dtype)).view(k, *shape)
            for i, slot in enumerate(slots):
                if slot is not None:
                    out[slot] = summed[i]
        return out


def total_squared_norms(layers, stacks: StackedGradients,
                        units: torch.Tensor, num_units: int,
                        identity: bool) -> torch.Tensor:
    """Each unit's squared gradient norm over all layers, in float64: the
    stacked groups' norms and those of gradients instantiated and dropped
    (squared and summed per dtype in a few ops) plus the ghost norms."""
    total = torch.zeros(num_units, dtype=torch.float64, device=units.device)
    by_dtype: Dict[torch.dtype, List[torch.Tensor]] = {}
    norms = stacks.norms(units, num_units, identity) + [
        n.unsqueeze(1) for layer in layers for n in layer.norms]
    for n in norms:
        by_dtype.setdefault(n.dtype, []).append(n)
    for group in by_dtype.values():
        total += torch.cat(group, 1).double().pow(2).sum(1)
    squares = [layer.norm2 for layer in layers if layer.norm2 is not None]
    if squares:
        total += torch.stack(squares).sum(0)
    return total
