"""The fusion network, top-down: encoders per modality -> fuser -> BEV backbone -> heads.

Every modality becomes a BEV map on the one grid of ``ModelConfig.grid`` (ny rows along y, nx columns
along x), so fusion is a per-cell operation:

    camera  (Ncam, 3, H, W) -> CNN -> depth distribution x context -> lift (bev_pool) -> (1, Cc, ny, nx)
    lidar   pillars (Nk, F + 5) -> linear, norm, relu -> max per pillar -> scatter    -> (1, Cl, ny, nx)
    radar   pillars (Nk, F + 5) -> the same, its own weights                          -> (1, Cr, ny, nx)
    fuser   three maps (absent ones zero) + health + present -> (1, Cf, ny, nx)
    backbone strided first, channels_last -> (1, Cb, ny / s, nx / s),  s = head.output_stride
    head    class heatmaps + offset, z, log size, yaw (sin, cos), velocity
    aux     one heatmap head per modality on its own BEV map: what it alone believes

The two reductions (frustum points into cells, points into pillars) have two paths each that give
the same numbers: differentiable torch (``index_add_``, ``scatter_reduce``) when autograd is on or
the tensors live on a GPU, and the numba kernels (``bev_pool``, ``scatter_max``) for CPU inference,
which are several times faster there. BEV maps are channels_last from the start.

One frame per forward (batch 1): the inputs of a frame (cameras, variable point counts) do not
stack, and the runtime runs frame by frame.

Normalisation uses each frame's own statistics, in training and at inference alike (batch norm
without running averages): a training batch is one frame, so that is what the weights learned. The
running averages of ordinary batch norm mix highway and city frames and every subset of modalities
the dropout draws; evaluated with them, the shipped weights lost 0.06 mAP and regressed highway
velocities at half their size (AVE 4.2 m/s against 1.5 m/s with frame statistics, same weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GridConfig
from ..geometry.bev_pool import BevPoolGeometry, bev_pool
from ..geometry.pillars import DECORATIONS
from ..geometry.scatter import scatter_max
from .config import (
    MODALITIES,
    BevBackboneConfig,
    CameraEncoderConfig,
    FuserConfig,
    HeadConfig,
    ModelConfig,
    ModelError,
    PillarEncoderConfig,
)
from .inputs import CameraInputs, ModelInputs, PillarInputs

__all__ = [
    'ABSENT_LOGIT',
    'EMBEDDING_CHANNELS',
    'HEATMAP_PRIOR_BIAS',
    'REGRESSION_CHANNELS',
    'AuxHeatmapHead',
    'BevBackbone',
    'CameraEncoder',
    'CenterHead',
    'ConvFuser',
    'FusionNet',
    'GatedFuser',
    'HeadOutputs',
    'NetOutputs',
    'PillarEncoder',
    'lift_to_bev',
    'pillars_to_bev',
]

EMBEDDING_CHANNELS = 32  # the shared space of the modalities' per-object features
HEATMAP_PRIOR_BIAS = -2.19  # sigmoid = 0.1: focal loss starts from "mostly background" (CenterNet)
ABSENT_LOGIT = -30.0  # the heatmap logit of a modality that is not there: it believes nothing
REGRESSION_CHANNELS = (('offset', 2), ('z', 1), ('log_size', 3), ('yaw', 2), ('velocity', 2))


def frame_norm2d(channels: int) -> nn.BatchNorm2d:
    """Batch norm over one frame's cells (or its cameras' pixels), never running averages."""
    return nn.BatchNorm2d(channels, track_running_stats=False)


def conv_bn_relu(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         frame_norm2d(cout), nn.ReLU(inplace=True))


def bev_tensor(canvas: torch.Tensor) -> torch.Tensor:
    """(C, ny, nx) -> (1, C, ny, nx) channels_last, the layout every BEV convolution runs in."""
    return canvas.unsqueeze(0).contiguous(memory_format=torch.channels_last)


def zero_bev(C: int, grid_shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(1, C, ny, nx) channels_last zeros: the map of an absent modality."""
    ny, nx = grid_shape
    return torch.zeros(1, ny, nx, C, device=device).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------------
# Camera: CNN, depth distribution, lift-splat onto the grid


def lift_to_bev(depth: torch.Tensor, context: torch.Tensor, geometry: BevPoolGeometry) -> torch.Tensor:
    """(1, C, ny, nx) channels_last: per cell, the sum of depth[n, d, h, w] * context[n, h, w, :] over
    its frustum points.

    depth (Ncam, D, Hf, Wf) probabilities, context (Ncam, Hf, Wf, C) channels-last. With autograd on,
    or off the CPU, the torch path (``index_add_`` over the precomputed indices, as BEVFusion's
    pure-torch pooling); otherwise the numba ``bev_pool`` kernel. They agree to float32 rounding.
    """
    if torch.is_grad_enabled() or depth.device.type != 'cpu':
        return lift_to_bev_torch(depth, context, geometry)
    pooled = bev_pool(depth.float().contiguous().numpy(), context.float().contiguous().numpy(), geometry)
    return bev_tensor(torch.from_numpy(pooled))  # the kernel writes (C, ny, nx) planes


def lift_to_bev_torch(depth: torch.Tensor, context: torch.Tensor, geometry: BevPoolGeometry) -> torch.Tensor:
    """``lift_to_bev`` in differentiable torch: (M, C) products, ``index_add_`` into the cells."""
    Ncam, D, Hf, Wf = depth.shape
    C = context.shape[-1]
    ny, nx = geometry.grid_shape
    assert (Ncam, D, Hf, Wf) == geometry.frustum_shape, (
        f'depth {tuple(depth.shape)} does not match the geometry {geometry.frustum_shape}')
    device = depth.device
    depth_index = torch.from_numpy(geometry.depth_index).to(device, torch.long)  # (M,)
    feature_index = torch.from_numpy(geometry.feature_index).to(device, torch.long)  # (M,)
    cell = torch.from_numpy(geometry.point_cell).to(device, torch.long)  # (M,)
    products = depth.reshape(-1)[depth_index, None] * context.reshape(-1, C)[feature_index]  # (M, C)
    pooled = depth.new_zeros(ny * nx, C).index_add_(0, cell, products)  # (ny * nx, C)
    return pooled.view(1, ny, nx, C).permute(0, 3, 1, 2)  # channels_last already: no copy


class CameraEncoder(nn.Module):
    """Per-image CNN -> D-bin depth softmax and C context channels -> lifted to the BEV grid (LSS)."""

    def __init__(self, config: CameraEncoderConfig, grid: GridConfig) -> None:
        super().__init__()
        self.config = config
        self.grid = grid
        stages, cin = [], 3
        for cout in config.backbone_channels:  # each block halves the resolution: strides come first
            stages.append(conv_bn_relu(cin, cout, stride=2))
            cin = cout
        self.backbone = nn.Sequential(*stages)
        D, C = config.num_depth_bins, config.channels
        self.depth_net = nn.Sequential(conv_bn_relu(cin, cin), nn.Conv2d(cin, D + C, 1))
        self.bev_refine = conv_bn_relu(C, C)  # the lifted map is sparse and blocky; one conv smooths it

    def forward(self, camera: CameraInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """-> BEV map (1, C, ny, nx) and the depth distribution (Ncam, D, Hf, Wf) for depth supervision."""
        Ncam, _, H, W = camera.images.shape
        D, C = self.config.num_depth_bins, self.config.channels
        Wf, Hf = self.config.feature_size
        if (W, H) != self.config.image_size or camera.geometry.frustum_shape[1:] != (D, Hf, Wf):
            raise ModelError(f'camera: images {W}x{H} and geometry {camera.geometry.frustum_shape} do not match the '
                             f'encoder ({self.config.image_size[0]}x{self.config.image_size[1]} images, {D} depth '
                             f'bins, {Wf}x{Hf} features)')
        device = self.depth_net[1].weight.device
        images = camera.images.to(device).contiguous(memory_format=torch.channels_last)
        x = self.depth_net(self.backbone(images))  # (Ncam, D + C, Hf, Wf)
        depth = x[:, :D].softmax(dim=1)  # (Ncam, D, Hf, Wf)
        context = x[:, D:].permute(0, 2, 3, 1)  # (Ncam, Hf, Wf, C), the channels-last view bev_pool reads
        bev = lift_to_bev(depth, context, camera.geometry)  # (1, C, ny, nx)
        return self.bev_refine(bev), depth


# ---------------------------------------------------------------------------------------------------
# Lidar and radar: PointPillars' pillar feature net, padding-free


def pillars_to_bev(point_features: torch.Tensor, pillars: PillarInputs, grid_shape: tuple[int, int]) -> torch.Tensor:
    """(1, C, ny, nx) channels_last: the max of each pillar's (Nk, C) point features at its cell.

    The max: ``scatter_reduce(amax)`` with autograd on or off the CPU, else the numba
    ``scatter_max``; identical results (max does not depend on order). Then each pillar's C values
    are one row of a (ny * nx, C) canvas, which is the channels_last layout the convolutions want;
    ``scatter_to_bev`` writes (C, ny, nx) planes and the transpose after it cost 0.8 ms a map here.
    """
    Nk, C = point_features.shape
    ny, nx = grid_shape
    P = pillars.pillars.num_pillars
    device = point_features.device
    if torch.is_grad_enabled() or device.type != 'cpu':
        index = pillars.point_pillar.to(device).unsqueeze(1).expand(Nk, C)  # (Nk, C)
        pooled = point_features.new_zeros(P, C).scatter_reduce(0, index, point_features, 'amax',
                                                                include_self=False)  # (P, C)
    else:
        pooled = torch.from_numpy(scatter_max(point_features.float().contiguous().numpy(),
                                              pillars.pillars.point_pillar, P))  # (P, C)
    coords = pillars.coords.to(device)  # (P, 2) row, col
    canvas = point_features.new_zeros(ny * nx, C).index_copy(0, coords[:, 0] * nx + coords[:, 1], pooled)
    return canvas.view(1, ny, nx, C).permute(0, 3, 1, 2)


class PillarEncoder(nn.Module):
    """Pillar feature net over the real points only: linear + norm + relu per point, max per pillar.

    The point features are the input fields (``config.point_fields``) plus pillarize's five
    decorations (offsets from the pillar mean and from the cell centre). A field the sensor did not
    measure is NaN (a radar's rcs); it enters the net as 0.
    """

    def __init__(self, config: PillarEncoderConfig, grid: GridConfig) -> None:
        super().__init__()
        self.config = config
        self.grid = grid
        self.linear = nn.Linear(config.num_point_fields + DECORATIONS, config.channels, bias=False)
        self.norm = nn.BatchNorm1d(config.channels, track_running_stats=False)  # over the frame's points

    def forward(self, pillars: PillarInputs) -> torch.Tensor:
        """-> BEV map (1, C, ny, nx)."""
        features = pillars.features  # (Nk, F + 5)
        Nk, F5 = features.shape
        C = self.config.channels
        if F5 != self.config.num_point_fields + DECORATIONS:
            raise ModelError(f'pillars: features have {F5} columns, the encoder expects {self.config.num_point_fields} '
                             f'fields ({", ".join(self.config.point_fields)}) + {DECORATIONS} decorations')
        device = self.linear.weight.device
        if Nk == 0:
            return zero_bev(C, self.grid.shape, device)
        x = self.linear(torch.nan_to_num(features.to(device), nan=0.0, posinf=0.0, neginf=0.0))
        if Nk < 2:  # one point is its own mean: normalised it is 0, which leaves the norm's shift
            x = self.norm.bias.expand_as(x) if self.norm.affine else torch.zeros_like(x)
        else:
            x = self.norm(x)
        x = F.relu(x)  # (Nk, C)
        return pillars_to_bev(x, pillars, self.grid.shape)  # (1, C, ny, nx)


# ---------------------------------------------------------------------------------------------------
# Fusers: (camera, lidar, radar) maps -> one map. Absent modalities are zero maps, flagged.


def masked_maps(maps: Sequence[torch.Tensor], present: torch.Tensor) -> list[torch.Tensor]:
    """The maps with each absent modality's replaced by zeros (not multiplied: 0 * NaN is NaN)."""
    return [m if bool(p) else torch.zeros_like(m) for m, p in zip(maps, present)]


class ConvFuser(nn.Module):
    """BEVFusion's baseline: concatenate the modality maps, one conv."""

    def __init__(self, in_channels: Sequence[int], config: FuserConfig) -> None:
        super().__init__()
        self.fuse = conv_bn_relu(sum(in_channels), config.channels, kernel=config.kernel_size)

    def forward(self, maps: Sequence[torch.Tensor], present: torch.Tensor,
                health: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """maps (1, C_m, ny, nx) per modality -> fused (1, Cf, ny, nx) and the (3,) weights (= present)."""
        x = torch.cat(masked_maps(maps, present), dim=1)  # (1, sum C_m, ny, nx)
        return self.fuse(x), present.float().to(x.device)


class GatedFuser(nn.Module):
    """Concatenate the maps each scaled by a gate that depends on the modalities' health.

    gate_m = present_m * sigmoid(k_m * (health_m - 0.5) + MLP(health, present)_m): a failing
    modality (low health) is turned down instead of poisoning the fused map, and an absent one is
    exactly 0. The scale k starts at 8 and the MLP's output at 0, so before any training the gate
    already follows health (0.02 at health 0, 0.98 at 1). With ``spatial_gate``, a per-cell sigmoid
    gate computed from the masked maps multiplies it, so a modality can be trusted in some regions
    (near range, inside its field of view) and not others.
    """

    def __init__(self, in_channels: Sequence[int], config: FuserConfig) -> None:
        super().__init__()
        M = len(in_channels)
        self.health_scale = nn.Parameter(torch.full((M,), 8.0))
        self.gate_mlp = nn.Sequential(nn.Linear(2 * M, config.gate_hidden), nn.ReLU(inplace=True),
                                      nn.Linear(config.gate_hidden, M))
        nn.init.zeros_(self.gate_mlp[2].weight)
        nn.init.zeros_(self.gate_mlp[2].bias)
        self.spatial = nn.Conv2d(sum(in_channels), M, 3, padding=1) if config.spatial_gate else None
        if self.spatial is not None:  # start open (sigmoid(3) = 0.95) and uniform
            nn.init.zeros_(self.spatial.weight)
            nn.init.constant_(self.spatial.bias, 3.0)
        self.fuse = conv_bn_relu(sum(in_channels), config.channels, kernel=config.kernel_size)

    def forward(self, maps: Sequence[torch.Tensor], present: torch.Tensor,
                health: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """maps (1, C_m, ny, nx) per modality -> fused (1, Cf, ny, nx) and the (3,) per-modality gates."""
        maps = masked_maps(maps, present)
        device = maps[0].device
        on = present.float().to(device)  # (3,)
        health = health.float().to(device) * on  # (3,) an absent modality's health means nothing
        logits = self.health_scale * (health - 0.5) + self.gate_mlp(torch.cat([health, on]))  # (3,)
        gate = torch.sigmoid(logits) * on  # (3,) exactly 0 where absent
        weights = gate.view(1, -1, 1, 1)  # (1, 3, 1, 1)
        if self.spatial is not None:
            weights = weights * torch.sigmoid(self.spatial(torch.cat(maps, dim=1)))  # (1, 3, ny, nx)
        x = torch.cat([m * weights[:, i:i + 1] for i, m in enumerate(maps)], dim=1)  # (1, sum C_m, ny, nx)
        return self.fuse(x), gate


# ---------------------------------------------------------------------------------------------------
# BEV backbone and heads


class BevBackbone(nn.Module):
    """Stages at growing strides (the first already strided: the grid is large, the objects not
    small), each upsampled (or kept) to the head's stride and concatenated, as SECOND's FPN."""

    def __init__(self, in_channels: int, config: BevBackboneConfig, output_stride: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        self.necks = nn.ModuleList()
        cin = in_channels
        for cout, stride, blocks, total in zip(config.channels, config.strides, config.blocks,
                                               config.stage_strides()):
            layers = [conv_bn_relu(cin, cout, stride=stride)] + [conv_bn_relu(cout, cout) for _ in range(blocks)]
            self.stages.append(nn.Sequential(*layers))
            up = total // output_stride
            assert up >= 1 and total % output_stride == 0, f'stage stride {total} vs head stride {output_stride}'
            neck = (nn.ConvTranspose2d(cout, config.neck_channels, up, stride=up, bias=False) if up > 1
                    else nn.Conv2d(cout, config.neck_channels, 1, bias=False))
            self.necks.append(nn.Sequential(neck, frame_norm2d(config.neck_channels), nn.ReLU(inplace=True)))
            cin = cout
        self.out_channels = config.neck_channels * len(config.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1, Cf, ny, nx) -> (1, stages * neck_channels, ny / s, nx / s)."""
        outs = []
        for stage, neck in zip(self.stages, self.necks):
            x = stage(x)
            outs.append(neck(x))
        return torch.cat(outs, dim=1)


class HeadOutputs(NamedTuple):
    """Raw head maps, (B, *, H, W) on the head's grid (BEV grid / output_stride)."""

    heatmap: torch.Tensor  # (B, K, H, W) class logits
    offset: torch.Tensor  # (B, 2, H, W) centre within its cell, in cells: x = x_min + (col + dx) * cell
    z: torch.Tensor  # (B, 1, H, W) box centre height, metres
    log_size: torch.Tensor  # (B, 3, H, W) log of length, width, height in metres
    yaw: torch.Tensor  # (B, 2, H, W) sin, cos of the heading
    velocity: torch.Tensor  # (B, 2, H, W) vx, vy, m/s


class CenterHead(nn.Module):
    """CenterPoint-style: a heatmap branch and one regression branch for all box parameters."""

    def __init__(self, in_channels: int, config: HeadConfig) -> None:
        super().__init__()
        K, C = config.num_classes, config.channels
        self.heatmap = nn.Sequential(conv_bn_relu(in_channels, C), nn.Conv2d(C, K, 1))
        nn.init.constant_(self.heatmap[1].bias, HEATMAP_PRIOR_BIAS)
        regression = sum(n for _, n in REGRESSION_CHANNELS)
        self.regression = nn.Sequential(conv_bn_relu(in_channels, C), nn.Conv2d(C, regression, 1))

    def forward(self, x: torch.Tensor) -> HeadOutputs:
        """(B, Cb, H, W) -> HeadOutputs."""
        reg = self.regression(x)  # (B, 10, H, W)
        offset, z, log_size, yaw, velocity = reg.split([n for _, n in REGRESSION_CHANNELS], dim=1)
        return HeadOutputs(self.heatmap(x), offset, z, log_size, yaw, velocity)


class AuxHeatmapHead(nn.Module):
    """Class heatmap from one modality's own BEV map, at the main head's resolution."""

    def __init__(self, in_channels: int, config: HeadConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(conv_bn_relu(in_channels, config.channels, stride=config.output_stride),
                                 nn.Conv2d(config.channels, config.num_classes, 1))
        nn.init.constant_(self.net[1].bias, HEATMAP_PRIOR_BIAS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1, C_m, ny, nx) -> (1, K, H, W) logits."""
        return self.net(x)


# ---------------------------------------------------------------------------------------------------
# The whole network


@dataclass(frozen=True, eq=False)
class NetOutputs:
    head: HeadOutputs  # the fused prediction
    aux_heatmaps: dict[str, torch.Tensor]  # modality -> (1, K, H, W) logits; ABSENT_LOGIT where absent
    bev: dict[str, torch.Tensor]  # modality -> (1, C_m, ny, nx) its own BEV map; zeros where absent
    present: torch.Tensor  # (3,) bool, camera, lidar, radar
    gates: torch.Tensor  # (3,) the fuser's per-modality weight (0 where absent)
    camera_depth: torch.Tensor | None  # (Ncam, D, Hf, Wf) depth distribution, for depth supervision


class FusionNet(nn.Module):
    """The whole network: ``FusionNet(config)(inputs) -> NetOutputs`` for one frame.

    Any subset of modalities, the empty one included, is a normal input: the absent ones are zero
    maps, flagged in ``present``; with none present the heatmap is ``ABSENT_LOGIT`` everywhere.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.camera = CameraEncoder(config.camera, config.grid)
        self.lidar = PillarEncoder(config.lidar, config.grid)
        self.radar = PillarEncoder(config.radar, config.grid)
        channels = [config.channels_of(m) for m in MODALITIES]
        fuser = ConvFuser if config.fuser.kind == 'conv' else GatedFuser
        self.fuser = fuser(channels, config.fuser)
        self.backbone = BevBackbone(config.fuser.channels, config.backbone, config.head.output_stride)
        self.head = CenterHead(self.backbone.out_channels, config.head)
        self.aux_heads = nn.ModuleDict({m: AuxHeatmapHead(c, config.head) for m, c in zip(MODALITIES, channels)})
        # Each modality's BEV features projected into one shared space, where training pulls the
        # modalities' features of the same object together (the consistency loss): a per-object,
        # per-pair similarity the consistency stage can read.
        self.embed = nn.ModuleDict({m: nn.Linear(c, EMBEDDING_CHANNELS) for m, c in zip(MODALITIES, channels)})

    def embeddings(self, bev: torch.Tensor, modality: str, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(N, E) unit vectors: ``modality``'s BEV map (1, C, ny, nx) at the N cells (rows, cols)."""
        features = bev[0, :, rows, cols].t()  # (N, C)
        return F.normalize(self.embed[modality](features), dim=1)

    def forward(self, inputs: ModelInputs) -> NetOutputs:
        ny, nx = self.config.grid.shape
        H, W = self.config.head_shape
        K = self.config.head.num_classes
        present = inputs.present  # (3,) bool
        device = self.head.heatmap[1].weight.device

        # 1. Encoders: each modality onto the grid, (1, C_m, ny, nx); an absent one is a zero map.
        bev: dict[str, torch.Tensor] = {}
        camera_depth = None
        if inputs.camera is not None:
            bev['camera'], camera_depth = self.camera(inputs.camera)
        if inputs.lidar is not None:
            bev['lidar'] = self.lidar(inputs.lidar)
        if inputs.radar is not None:
            bev['radar'] = self.radar(inputs.radar)
        for m in MODALITIES:
            if m not in bev:
                bev[m] = zero_bev(self.config.channels_of(m), (ny, nx), device)

        # 2. Fuser: one (1, Cf, ny, nx) map, each modality weighted by its gate.
        fused, gates = self.fuser([bev[m] for m in MODALITIES], present, inputs.health)

        # 3. Backbone and head on the fused map: (1, K, H, W) heatmap and the box regressions.
        head = self.head(self.backbone(fused))
        if not bool(present.any()):  # nothing to see with: no detections, whatever the biases say
            head = head._replace(heatmap=torch.full_like(head.heatmap, ABSENT_LOGIT))

        # 4. What each modality alone believes, for the consistency stage.
        aux = {m: self.aux_heads[m](bev[m]) if bool(p)
               else torch.full((1, K, H, W), ABSENT_LOGIT, device=device)
               for m, p in zip(MODALITIES, present)}
        return NetOutputs(head, aux, bev, present, gates, camera_depth)
