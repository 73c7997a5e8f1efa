#!/usr/bin/env bash
# Renders the fault benchmark's scenes: the same 10 held-out scenes (seeds 950000..950009, never used
# in training; urban, highway, intersection, night in turn, 2 s each) once clean and once per fault
# type (the presets of mmfusion_ros/sim/fault_presets, scaled to 2 s, plus the two target cases in
# this folder). Then: mmfusion eval --faults OUT/<fault> ... --clean OUT/none (see README).
set -euo pipefail
out=${1:-out/faults}
scenes=${SCENES:-10}
mmfusion=${MMFUSION:-.venv/bin/mmfusion}
faults=(none camera_blackout camera_frozen radar_silence lidar_sector_dropout
        scripts/fault_benchmark/extrinsic_drift_1deg.yaml scripts/fault_benchmark/time_offset_50ms.yaml
        camera_occlusion camera_glare lidar_beam_loss lidar_rain radar_ghost_targets dropped_messages
        extrinsic_drift time_offset)
for fault in "${faults[@]}"; do
  name=$(basename "$fault" .yaml)
  "$mmfusion" simulate --scenario urban,highway,intersection,night --scenes "$scenes" --duration 2 \
    --seed 950000 --faults "$fault" --out "$out/$name"
done
