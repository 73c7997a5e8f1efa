"""Training losses, one function each, summed with the weights of ``LossConfig`` by ``total_loss``.

- heatmap: CenterNet's penalty-reduced focal loss on the fused class heatmap;
- regression: L1 on offset, z, log size, sin/cos yaw and velocity at each object's centre cell and
  the cells around it (a peak beside the centre still regresses the centre);
- auxiliary: the same focal loss on each present modality's own heatmap (what it alone believes);
- consistency: InfoNCE between two modalities' projected BEV features at the object centres: an
  object's camera feature should be nearer its lidar feature than any other object's, and so on
  for every present pair (a cross-modal contrastive loss at the objects, where agreement matters);
- depth: negative log-likelihood of the camera's depth distribution at the lidar's depth, in the
  feature pixels a current-sweep lidar point projects to (BEVDepth's explicit depth supervision).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from ..model.config import MODALITIES, ModelConfig
from ..model.decode import HeadTargets
from ..model.network import FusionNet, NetOutputs
from ..errors import ConfigError
from .config import LossConfig

__all__ = ['class_weight_vector', 'consistency_loss', 'depth_loss', 'focal_heatmap_loss', 'regression_loss', 'total_loss']


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor,
                       class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """CenterNet focal loss (alpha 2, beta 4), normalised by the number of object centres.

    logits (K, H, W) or (1, K, H, W); target the same shape, gaussians with 1 at each centre;
    class_weights (K,) scales each class channel's terms (rare classes count more).
    """
    logits = logits.reshape(target.shape)
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    pos = -(F.logsigmoid(logits) * (1 - p) ** 2 * positive)
    neg = -(F.logsigmoid(-logits) * p ** 2 * (1 - target) ** 4 * (1 - positive))
    terms = pos + neg
    if class_weights is not None:
        terms = terms * class_weights.to(terms.device).reshape(-1, 1, 1)
    return terms.sum() / positive.sum().clamp(min=1.0)


def regression_loss(outputs: NetOutputs, targets: HeadTargets, velocity_weight: float,
                    class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean over objects (class_weights by label) of the weighted L1 over the 10 box
    channels at the cells that regress each object (``HeadTargets.dense_*``: the centre cell, its
    neighbours and the footprint, their weights summing to 1 an object)."""
    head = outputs.head
    reg = torch.cat([head.offset, head.z, head.log_size, head.yaw, head.velocity], dim=1)[0]  # (10, H, W)
    if not bool(targets.mask.any()) or len(targets.dense_index) == 0:
        return reg.sum() * 0.0
    device = reg.device
    slot = targets.dense_slot.to(device)
    predicted = reg.reshape(reg.shape[0], -1)[:, targets.dense_index.to(device)].t()  # (M, 10)
    wanted = targets.regression.to(device)[slot].clone()
    wanted[:, :2] = targets.dense_offset.to(device)
    channel = torch.ones(10, device=device)
    channel[8:] = velocity_weight
    per_cell = ((predicted - wanted).abs() * channel).sum(dim=1) * targets.dense_weight.to(device)
    per_object = torch.zeros(len(targets.mask), device=device).index_add_(0, slot, per_cell)[targets.mask.to(device)]
    if class_weights is None:
        return per_object.mean()
    w = class_weights.to(device)[targets.labels[targets.mask].to(device)]
    return (per_object * w).sum() / w.sum()


def consistency_loss(net: FusionNet, outputs: NetOutputs, centers_xy: torch.Tensor, config: ModelConfig,
                     temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over every pair of present modalities at the object centres' BEV cells."""
    grid = config.grid
    cols = ((centers_xy[:, 0] - grid.x_range[0]) / grid.cell_size).floor().long()
    rows = ((centers_xy[:, 1] - grid.y_range[0]) / grid.cell_size).floor().long()
    ny, nx = grid.shape
    inside = (cols >= 0) & (cols < nx) & (rows >= 0) & (rows < ny)
    rows, cols = rows[inside], cols[inside]
    present = [m for m, p in zip(MODALITIES, outputs.present) if bool(p)]
    zero = outputs.head.heatmap.sum() * 0.0
    if len(rows) < 2 or len(present) < 2:
        return zero
    embedded = {m: net.embeddings(outputs.bev[m], m, rows, cols) for m in present}
    labels = torch.arange(len(rows), device=zero.device)
    losses = []
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            logits = embedded[a] @ embedded[b].t() / temperature  # (N, N)
            losses.append((F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2)
    return torch.stack(losses).mean()


def depth_loss(depth: torch.Tensor | None, target: torch.Tensor | None) -> torch.Tensor | None:
    """Mean NLL of the depth distribution (Ncam, D, Hf, Wf) at the target bins (Ncam, Hf, Wf), -1 ignored."""
    if depth is None or target is None:
        return None
    target = target.to(depth.device)
    valid = target >= 0
    if not bool(valid.any()):
        return None
    chosen = depth.permute(0, 2, 3, 1)[valid]  # (V, D)
    p = chosen.gather(1, target[valid].unsqueeze(1)).squeeze(1)
    return -torch.log(p.clamp(min=1e-6)).mean()


def class_weight_vector(weights: LossConfig, classes: tuple[str, ...]) -> torch.Tensor | None:
    """(K,) loss weight of each head class (1 where not named); None when no class is weighted."""
    unknown = sorted(set(weights.class_weights) - set(classes))
    if unknown:
        raise ConfigError(f'train.loss.class_weights: {unknown} are not among the classes {list(classes)}')
    if not weights.class_weights:
        return None
    return torch.tensor([weights.class_weights.get(c, 1.0) for c in classes], dtype=torch.float32)


def total_loss(net: FusionNet, outputs: NetOutputs, targets: HeadTargets, centers_xy: torch.Tensor,
               depth_target: torch.Tensor | None, weights: LossConfig) -> tuple[torch.Tensor, Mapping[str, float]]:
    """The weighted sum and each part's value (unweighted), for the progress log."""
    heatmap_target = targets.heatmap.to(outputs.head.heatmap.device)
    per_class = class_weight_vector(weights, net.config.head.classes)
    parts: dict[str, torch.Tensor] = {
        'heatmap': focal_heatmap_loss(outputs.head.heatmap, heatmap_target, per_class),
        'regression': regression_loss(outputs, targets, weights.velocity, per_class),
    }
    aux = [focal_heatmap_loss(outputs.aux_heatmaps[m], heatmap_target, per_class)
           for m, p in zip(MODALITIES, outputs.present) if bool(p)]
    if aux:
        parts['auxiliary'] = torch.stack(aux).mean()
    if weights.consistency > 0:
        parts['consistency'] = consistency_loss(net, outputs, centers_xy, net.config, weights.temperature)
    depth = depth_loss(outputs.camera_depth, depth_target) if weights.depth > 0 else None
    if depth is not None:
        parts['depth'] = depth
    total = sum(getattr(weights, name) * value for name, value in parts.items())
    return total, {name: float(value.detach()) for name, value in parts.items()}
