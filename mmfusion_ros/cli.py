"""The ``mmfusion`` command.

Every subcommand with a result can write it as JSON (``--json PATH``); the file appears only when the
command succeeded, written to a temporary name and moved into place. Bad input ends the command with
exit status 2 and one line on stderr naming the file, topic, field or value at fault.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .config import DEFAULT_CONFIG, FusionConfig, load_config
from .errors import ConfigError, MmfusionError
from .io.json_file import write_json
from .train.config import DEFAULT_TRAIN_CONFIG

__all__ = ['inspect_bag', 'main']

EXIT_BAD_INPUT = 2
CONFIG_HELP = ('ROS-form parameter file (default: config/default.yaml); repeat to layer files, later ones '
               'overriding, as ROS 2 does with several --params-file')


def inspect_bag(paths: Sequence[Path], config: FusionConfig, *, recover: bool = False) -> dict[str, Any]:
    """What a recording holds, and which of its topics each configured sensor would read."""
    from .io.bag import BagReader  # here, not at the top: each command imports only what it uses

    with BagReader(paths, recover=recover) as reader:
        topics = [{'name': t.name, 'type': t.msgtype, 'count': t.count, 'rate_hz': round(t.rate_hz, 3)}
                  for t in reader.topics]
        result: dict[str, Any] = {
            'paths': [str(p) for p in reader.paths],
            'storage': reader.storage,
            'start_ns': reader.start_ns,
            'end_ns': reader.end_ns,
            'duration_s': reader.duration_s,
            'message_count': sum(t['count'] for t in topics),
            'topics': topics,
            'truncated': [{'path': str(t.path), 'file_size': t.file_size, 'lost_bytes': t.lost_bytes,
                           'messages_complete': t.messages_complete} for t in reader.truncated],
        }
    by_name = {t['name']: t for t in topics}
    bindings = []
    for name, sensor in config.sensors.items():
        found = by_name.get(sensor.topic)
        if found is None:
            status = 'missing'
        elif found['type'] != sensor.type:
            status = f'type mismatch: bag has {found["type"]}'
        elif sensor.info_topic and sensor.info_topic not in by_name:
            status = f'no camera info on {sensor.info_topic}'
        else:
            status = 'bound'
        bindings.append({'sensor': name, 'modality': sensor.modality, 'topic': sensor.topic,
                         'type': sensor.type, 'status': status, 'count': found['count'] if found else 0})
    result['bindings'] = bindings
    return result


def _print_inspect(result: dict[str, Any]) -> None:
    print(f'storage: {result["storage"]}   duration: {result["duration_s"]:.3f} s   '
          f'messages: {result["message_count"]}')
    for cut in result['truncated']:
        print(f'warning: {cut["path"]} is truncated: the last {cut["lost_bytes"]} of its '
              f'{cut["file_size"]} bytes held no complete message', file=sys.stderr)
    width = max([len(t['name']) for t in result['topics']] + [5])
    print(f'\n{"topic":<{width}}  {"type":<36} {"count":>7} {"rate Hz":>9}')
    for t in result['topics']:
        print(f'{t["name"]:<{width}}  {t["type"]:<36} {t["count"]:>7} {t["rate_hz"]:>9.2f}')
    print(f'\n{"sensor":<20} {"modality":<8} {"topic":<{width}}  status')
    for b in result['bindings']:
        print(f'{b["sensor"]:<20} {b["modality"]:<8} {b["topic"]:<{width}}  {b["status"]}')


def _cmd_inspect(args: argparse.Namespace) -> dict[str, Any]:
    result = inspect_bag(args.bag, load_config(args.config or [DEFAULT_CONFIG]), recover=args.recover)
    _print_inspect(result)
    return result


def _cmd_simulate(args: argparse.Namespace) -> dict[str, Any]:
    # Imported here: the simulator pulls in open3d, which the other commands do not need.
    from .sim.faults import load_faults
    from .sim.scenario import load_scenario
    from .sim.simulator import Simulation, record_bag, record_dataset

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f'--duration: must be positive, got {args.duration}')
    if args.frames is not None and args.frames < 1:
        raise ConfigError(f'--frames: must be at least 1, got {args.frames}')
    config = load_config(args.config or [DEFAULT_CONFIG])
    scenarios = [load_scenario(name) for name in args.scenario.split(',')]
    # Everything is validated before the first scene starts: a bad fault file writes no bag.
    schedules = [load_faults(args.faults or 'none', s.rig, args.duration or s.duration_s) for s in scenarios]
    if args.scenes is None:
        simulation = Simulation(scenarios[0], config, schedules[0], args.seed)
        result = record_bag(simulation, args.out, storage=args.storage, duration_s=args.duration,
                            sweeps=args.frames, overwrite=args.overwrite)
        print(f'{result["bag"]}: {result["frames"]} frames, {result["sim_s"]:.1f} s of scene in '
              f'{result["wall_s"]:.1f} s ({result["fps"]:.2f} frames/s, {result["realtime_factor"]:.2f}x '
              f'real time), {result["bag_bytes"] / 1e6:.1f} MB ({result["bytes_per_sim_s"] / 1e6:.2f} MB per '
              f'second of scene)')
        return result
    if args.scenes < 1:
        raise ConfigError(f'--scenes: must be at least 1, got {args.scenes}')
    index = record_dataset(args.out, args.scenes, scenarios, schedules, config, seed=args.seed,
                           storage=args.storage, duration_s=args.duration, sweeps=args.frames)
    print(f'{args.out}: {len(index["scenes"])} scenes, {index["frames"]} frames')
    return index


def _bench_frames(config) -> list[Path]:
    """Frames for `bench network` when none are named: a 2 s default-rig urban scene, cached."""
    import tempfile

    from .model.config import model_config
    from .sim.faults import load_faults
    from .sim.scenario import load_scenario
    from .sim.simulator import record_dataset
    from .train.data import cache_dataset

    folder = Path(tempfile.mkdtemp(prefix='mmfusion_bench_'))
    scenario = load_scenario('urban')
    record_dataset(folder / 'scenes', 1, [scenario], [load_faults('none', scenario.rig, 2.0)], config, seed=31,
                   duration_s=2.0)
    return cache_dataset(folder / 'scenes', folder / 'cache', config, model_config(config), stride=4, progress=False)


def _cmd_bench(args: argparse.Namespace) -> list[dict[str, Any]] | dict[str, Any]:
    from tqdm import tqdm

    if args.target == 'network':
        from .model.benchmark import bench_network, frame_files

        config = load_config(args.config or [DEFAULT_CONFIG])
        files = frame_files(args.frames) if args.frames else _bench_frames(config)
        result = bench_network(files, config, weights=args.weights, device=args.device, repeats=args.repeats)
        print(f'network {result["preset"]} ({result["fuser"]} fuser, grid {result["grid_cells"]}) on '
              f'{result["device"]}, {result["frames"]} frames x {result["repeats"]}:')
        for key in ('inputs_ms', 'network_ms', 'decode_ms', 'total_ms'):
            print(f'  {key[:-3]:<8} p50 {result[key]["p50"]:8.2f} ms   p99 {result[key]["p99"]:8.2f} ms')
        return result
    if args.config or args.frames or args.weights:
        raise ConfigError('--config, --frames and --weights are options of `bench network`, not `bench kernels`')

    from .geometry.benchmark import run_benchmark
    from .geometry.benchmark_cases import kernel_cases

    device = args.device or 'cpu'
    if device == 'cuda':
        from numba import cuda

        if not cuda.is_available():
            raise MmfusionError('--device cuda: no CUDA device is available here')
    cases = kernel_cases(only=args.kernels, cuda=device == 'cuda')
    with tqdm(total=len(cases), desc='kernels', unit='kernel') as bar:
        results = run_benchmark(cases, device=device, repeats=args.repeats,
                                progress=lambda name: (bar.set_postfix_str(name), bar.update(0)))
        bar.update(len(cases))
    print(f'{"kernel":<22} {"numba ms":>10} {"baseline ms":>12} {"speedup":>8} {"bw frac":>8} '
          f'{"compile s":>9}  target')
    for r in results:
        print(f'{r["kernel"]:<22} {r["numba_ms"]:>10.3f} {r["baseline_ms"]:>12.3f} {r["speedup"]:>8.2f} '
              f'{r["bandwidth_fraction"]:>8.3f} {r.get("compile_s", float("nan")):>9.2f}  {"met" if r["target_met"] else "missed"}'
              + (f'   cuda {r["cuda_ms"]:.3f} ms' if 'cuda_ms' in r else ''))
    return results


def _cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from .train.config import load_train_config
    from .train.trainer import train

    config = load_train_config(args.config)
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f'--steps: must be at least 1, got {args.steps}')
    if args.dataset is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, dataset=str(args.dataset)))
    if args.init is not None:
        config = dataclasses.replace(config, init_weights=str(args.init.resolve()))
    summary = train(config, args.out, steps=args.steps)
    print(f'{summary["weights"]}: {summary["steps"]} steps over {summary["frames"]} frames of {summary["scenes"]} '
          f'scenes on {summary["device"]}, {summary["train_seconds"] / 60:.1f} min of training')
    return summary


def _cmd_eval_faults(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from .eval.faults import evaluate_fault_recordings
    from .pipeline import FusionPipeline

    config = load_config(args.config or [DEFAULT_CONFIG])
    pipeline = FusionPipeline(config, weights=str(args.weights) if args.weights else None)
    result = evaluate_fault_recordings(args.bag, args.clean or [], config, pipeline,
                                       progress=lambda bags: tqdm(bags, desc='recordings', unit='bag'))
    result['weights'] = str(args.weights or config.model.weights or 'packaged default')
    clean = result['clean']
    print(f'clean: {clean["recordings"]} recordings, {clean["detections"]} detections, false-flag rate '
          f'{clean["false_flag_rate"]} ({clean["false_flag_rate_objects"]} of the {clean["objects"]} that are objects); '
          f'health not ok in {clean["health_false_alarms"]["rate"]} of the sensor-frames, '
          f'{clean["health_false_alarms"]["recordings"]} recordings')
    print(f'{"fault":<24} {"pairs":>5} {"recall@3":>8} {"t_flag":>6} {"prec":>5} {"FF_pre":>6} {"health":>6} '
          f'{"h_lat":>5} {"RA":>5}')
    for kind, m in result['by_fault'].items():
        def show(value: Any) -> str:
            return '-' if value is None else f'{value:.2f}' if isinstance(value, float) else str(value)
        print(f'{kind:<24} {m["object_fault_pairs"]:>5} {show(m["flag_recall_3"]):>8} '
              f'{show(m["time_to_flag_frames"]["mean"]):>6} {show(m["precision"]):>5} '
              f'{show(m["false_flag_rate_before_fault"]):>6} {show(m["health_recall"]):>6} '
              f'{show(m["health_latency_frames"]["mean"]):>5} {show(m["resistance_ability"]):>5}')
    return result


def _cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from .eval.run import SUBSETS, evaluate_model
    from .model.weights import load_configured_model

    for path in [*args.bag, *(args.clean or [])]:
        if not path.exists():
            raise ConfigError(f'{path}: no such recording or folder')
    if args.faults:
        return _cmd_eval_faults(args)
    if args.clean:
        raise ConfigError('--clean: only with --faults')
    if args.every < 1:
        raise ConfigError(f'--every: must be at least 1, got {args.every}')
    for path in args.bag:
        if not path.exists():
            raise ConfigError(f'{path}: no such recording or folder')
    config = load_config(args.config or [DEFAULT_CONFIG])
    net = load_configured_model(config, args.weights)
    subsets = args.modalities or list(SUBSETS)
    result = evaluate_model(args.bag, config, net, every=args.every, subsets=subsets)
    result['weights'] = str(args.weights or config.model.weights or 'packaged default')
    print(f'{result["frames"]} frames of {len(result["recordings"])} recordings, '
          f'{result["ground_truth_boxes"]} ground-truth boxes')
    print(f'{"modalities":<16} {"mAP":>6} {"NDS":>6} {"NDS/fused":>9} {"ms/frame":>9}')
    for name, entry in result['by_modality'].items():
        ratio = entry['NDS_ratio_to_fused']
        print(f'{name:<16} {entry["mAP"]:>6.3f} {entry["NDS"]:>6.3f} {"" if ratio is None else f"{ratio:.3f}":>9} '
              f'{entry["ms_per_frame"]:>9.1f}')
    return result


def _cmd_replay(args: argparse.Namespace) -> dict[str, Any]:
    from .runtime.replay import ReplayOptions, replay

    for path in args.bag:
        if not path.exists():
            raise ConfigError(f'{path}: no such recording')
    if args.picture_every < 1:
        raise ConfigError(f'--picture-every: must be at least 1, got {args.picture_every}')
    config = load_config(args.config or [DEFAULT_CONFIG])
    options = ReplayOptions(weights=str(args.weights) if args.weights else None, out_bag=args.out,
                            report=args.report, realtime=args.realtime, picture_every=args.picture_every,
                            video=not args.no_video)
    summary = replay(args.bag, config, options)
    latency = summary['latency_ms']
    print(f'{summary["frames"]} frames ({summary["partial_frames"]} partial) in {summary["wall_s"]:.1f} s: '
          f'{summary["frames_per_s"]} frames/s, {summary["realtime_factor"]}x real time; latency p50 '
          f'{latency["p50"]} ms, p99 {latency["p99"]} ms; {summary["detections"]} detections, '
          f'{summary["flagged"]} flagged; {summary["dropped"]["total"]} dropped')
    if args.out:
        print(f'output bag: {args.out}')
    if args.report:
        print(f'report: {args.report / "index.html"}')
    return summary


def _cmd_node(args: argparse.Namespace) -> None:
    from .nodes.fusion_node import main as node_main, require_rclpy

    require_rclpy()  # without ROS 2: one line naming what is missing, exit status 2
    status = node_main(['mmfusion node', *(['--ros-args', *args.ros_args] if args.ros_args else [])])
    if status:
        raise SystemExit(status)


def _domain_id(value: str | None) -> int:
    """``--domain``, else ``ROS_DOMAIN_ID`` as ROS 2 reads it, else 0; an integer in 0..232."""
    import os

    where = '--domain'
    if value is None:
        value, where = os.environ.get('ROS_DOMAIN_ID', '').strip() or '0', 'ROS_DOMAIN_ID'
    try:
        domain = int(value)
    except ValueError:
        domain = -1
    if not 0 <= domain <= 232:
        raise ConfigError(f'{where}: a DDS domain id is an integer in 0..232, got {value!r}')
    return domain


def _cmd_dds_node(args: argparse.Namespace) -> dict[str, Any]:
    from .runtime.dds_node import run_dds_node

    domain = _domain_id(args.domain)
    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f'--duration: must be positive, got {args.duration}')
    config = load_config(args.config or [DEFAULT_CONFIG])
    mode = 'inline, every frame' if args.inline else 'threaded, newest frame'

    def ready() -> None:
        print(f'mmfusion dds-node: listening on DDS domain {domain} (loopback only), {mode}; '
              f'Ctrl-C stops', flush=True)

    summary = run_dds_node(config, domain_id=domain, weights=str(args.weights) if args.weights else None,
                           duration_s=args.duration, inline=args.inline, ready=ready)
    dds = summary['dds']
    print(f'{summary["frames"]} frames ({summary["partial_frames"]} partial, {summary["dropped"]["total"]} '
          f'dropped) from {sum(dds["received"].values())} messages ({sum(dds["rejected"].values())} rejected) '
          f'in {dds["wall_s"]:.1f} s; {summary["detections"]} detections; stopped by {dds["stopped_by"]}',
          flush=True)
    return summary


def _cmd_dds_play(args: argparse.Namespace) -> dict[str, Any]:
    from .runtime.dds_node import play_bag_over_dds

    domain = _domain_id(args.domain)
    for path in args.bag:
        if not path.exists():
            raise ConfigError(f'{path}: no such recording')
    if not args.rate >= 0:
        raise ConfigError(f'--rate: must be >= 0 (0: as fast as possible), got {args.rate}')
    if not args.wait >= 0:
        raise ConfigError(f'--wait: must be >= 0 seconds, got {args.wait}')
    result = play_bag_over_dds(args.bag, domain_id=domain, rate=args.rate, wait_for_subscribers_s=args.wait,
                               topics=args.topics)
    print(f'{result["messages"]} messages on {len(result["published"])} topics to DDS domain {domain} in '
          f'{result["wall_s"]:.1f} s ({result["recording_s"]:.1f} s recorded); '
          f'{sum(result["failed"].values())} refused', flush=True)
    if result['no_subscriber']:
        print(f'warning: no subscriber on {", ".join(result["no_subscriber"])}', file=sys.stderr)
    for topic, why in result['unsupported'].items():
        print(f'warning: {topic} not played: {why}', file=sys.stderr)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='mmfusion', description='Camera + lidar + radar 3D detection with modality agreement.')
    parser.add_argument('--version', action='version', version=f'mmfusion {__version__}')
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    inspect = commands.add_parser('inspect', help='what a rosbag2 recording holds and what the config binds')
    inspect.add_argument('bag', nargs='+', type=Path,
                         help='rosbag2 directory (sqlite3 or mcap) or .mcap file; several are merged')
    inspect.add_argument('--config', type=Path, action='append', help=CONFIG_HELP)
    inspect.add_argument('--recover', action='store_true',
                         help='read a cut-off MCAP file up to the cut instead of refusing it')
    inspect.add_argument('--json', type=Path, metavar='PATH', help='also write the result as JSON')
    inspect.set_defaults(run=_cmd_inspect)

    play = commands.add_parser('replay', help='run the detector over a recording: output bag and report')
    play.add_argument('bag', nargs='+', type=Path, help='rosbag2 directory or .mcap file; several are merged')
    play.add_argument('--config', type=Path, action='append', help=CONFIG_HELP)
    play.add_argument('--weights', type=Path, help='weights file (default: model.weights, else the packaged weights)')
    play.add_argument('--out', type=Path, metavar='OUT_BAG', help='write the inputs and every output to this bag')
    play.add_argument('--report', type=Path, metavar='DIR',
                      help='write summary.json, pictures, bev.mp4 and index.html here')
    play.add_argument('--realtime', action='store_true',
                      help='play at recorded speed against the wall clock (frames that miss their deadline '
                           'are counted); default: as fast as possible')
    play.add_argument('--picture-every', type=int, default=20, help='a BEV picture and camera mosaic every n frames')
    play.add_argument('--no-video', action='store_true', help='leave out bev.mp4')
    play.add_argument('--json', type=Path, metavar='PATH', help='also write the summary as JSON')
    play.set_defaults(run=_cmd_replay)

    simulate = commands.add_parser('simulate', help='record a simulated drive (or a training set) as rosbag2')
    simulate.add_argument('--scenario', default='urban',
                          help='named scenario (urban, highway, intersection, night, arterial) or a YAML file; '
                               'with --scenes, a comma-separated list to rotate through')
    simulate.add_argument('--out', type=Path, required=True,
                          help='bag to write; with --scenes, a folder of bags plus index.json')
    length = simulate.add_mutually_exclusive_group()
    length.add_argument('--duration', type=float, help='seconds of scene (default: the scenario\'s)')
    length.add_argument('--frames', type=int, help='number of lidar sweeps')
    simulate.add_argument('--seed', type=int, default=0, help='world, traffic and noise seed')
    simulate.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    simulate.add_argument('--faults', help='named fault preset or a YAML fault schedule (default: none)')
    simulate.add_argument('--scenes', type=int, help='dataset mode: write this many scenes, seeds seed+i')
    simulate.add_argument('--config', type=Path, action='append', help=CONFIG_HELP)
    simulate.add_argument('--overwrite', action='store_true', help='replace an existing bag')
    simulate.add_argument('--json', type=Path, metavar='PATH', help='also write the figures as JSON')
    simulate.set_defaults(run=_cmd_simulate)

    train = commands.add_parser('train', help='train the fusion network on simulator scenes')
    train.add_argument('--config', type=Path, default=DEFAULT_TRAIN_CONFIG, help='training parameter file')
    train.add_argument('--out', type=Path, required=True,
                       help='run folder: scenes, frame cache, checkpoint, weights.pt; an existing run resumes')
    train.add_argument('--steps', type=int, help='stop after this many steps (default: the config\'s)')
    train.add_argument('--dataset', type=Path, help='an existing `mmfusion simulate --scenes` folder to train on')
    train.add_argument('--init', type=Path, metavar='WEIGHTS',
                       help='start from these weights (fine-tuning; default: the config\'s init_weights, else a fresh network)')
    train.add_argument('--json', type=Path, metavar='PATH', help='also write the summary as JSON')
    train.set_defaults(run=_cmd_train)

    evaluate = commands.add_parser('eval', help='nuScenes detection metrics on annotated recordings, per modality')
    evaluate.add_argument('bag', nargs='+', type=Path,
                          help='annotated bags, or dataset folders of scene_* bags (mmfusion simulate --scenes)')
    evaluate.add_argument('--weights', type=Path, help='weights file (default: the packaged weights)')
    evaluate.add_argument('--config', type=Path, action='append', help=CONFIG_HELP)
    evaluate.add_argument('--every', type=int, default=1, help='score every n-th annotated frame')
    evaluate.add_argument('--modalities', nargs='+', metavar='SUBSET',
                          help='only these subsets: fused camera_only lidar_only radar_only without_camera '
                               'without_lidar without_radar (default: all)')
    evaluate.add_argument('--faults', action='store_true',
                          help='the fault benchmark: flag recall, time to flag, precision, false flags, sensor '
                               'health and resistance ability per fault type, over recordings with injected '
                               'faults (every frame, in order); given recordings without faults only: their '
                               'false flags and health false alarms')
    evaluate.add_argument('--clean', type=Path, nargs='+', metavar='BAG_OR_DIR',
                          help='with --faults: clean renders of the same scenes (false flags, mAP_clean)')
    evaluate.add_argument('--json', type=Path, metavar='PATH', help='also write the metrics as JSON')
    evaluate.set_defaults(run=_cmd_eval)

    domain_help = ('DDS domain id, 0..232 (default: $ROS_DOMAIN_ID, else 0, as ROS 2); DDS stays on the '
                   'loopback interface')
    dds_node = commands.add_parser('dds-node', help='run the detector on live DDS topics (ROS 2 wire format, loopback)')
    dds_node.add_argument('--config', type=Path, action='append', help=CONFIG_HELP)
    dds_node.add_argument('--weights', type=Path,
                          help='weights file (default: model.weights, else the packaged weights)')
    dds_node.add_argument('--domain', metavar='N', help=domain_help)
    dds_node.add_argument('--duration', type=float, metavar='S',
                          help='stop after listening this many seconds (default: run until SIGINT or SIGTERM)')
    dds_node.add_argument('--inline', action='store_true',
                          help='run every frame in the receive loop, none skipped (default: a worker runs the newest '
                               'complete frame and skips older ones, as live)')
    dds_node.add_argument('--json', type=Path, metavar='PATH', help='also write the summary as JSON at the end')
    dds_node.set_defaults(run=_cmd_dds_node)

    dds_play = commands.add_parser('dds-play', help='publish a recording on DDS topics (ROS 2 wire format, loopback)')
    dds_play.add_argument('bag', nargs='+', type=Path, help='rosbag2 directory or .mcap file; several are merged')
    dds_play.add_argument('--domain', metavar='N', help=domain_help)
    dds_play.add_argument('--rate', type=float, default=1.0,
                          help='times recorded speed (default: 1.0; 0: as fast as possible)')
    dds_play.add_argument('--topics', nargs='+', metavar='TOPIC', help='play only these topics (default: all)')
    dds_play.add_argument('--wait', type=float, default=10.0, metavar='S',
                          help='seconds to wait for subscribers before the first message (default: 10)')
    dds_play.add_argument('--json', type=Path, metavar='PATH', help='also write the counts as JSON')
    dds_play.set_defaults(run=_cmd_dds_play)

    bench = commands.add_parser('bench', help='measure speed: geometry kernels against their baselines, or the '
                                              'network per frame')
    bench.add_argument('target', choices=('kernels', 'network'), help='what to measure')
    bench.add_argument('--kernels', nargs='+', metavar='NAME', help='kernels: only these (default: all)')
    bench.add_argument('--device', choices=('cpu', 'cuda'),
                       help='kernels: cuda also times the CUDA kernels (with transfers; default cpu); network: '
                            'where the network runs (default: model.device of the parameter files)')
    bench.add_argument('--config', action='append', type=Path, metavar='YAML',
                       help='network: parameter file(s), layered in order (e.g. default.yaml then gpu.yaml)')
    bench.add_argument('--frames', nargs='+', type=Path, metavar='PATH',
                       help="network: cached frames (.npz, or folders of them: `mmfusion train`'s cache); "
                            'default: a 2 s urban scene simulated and cached in a temporary folder')
    bench.add_argument('--weights', type=Path, metavar='PATH', help='network: weights file (default: the configured)')
    bench.add_argument('--repeats', type=int, default=7,
                       help='kernels: timed calls per implementation (median); network: passes over the frames')
    bench.add_argument('--json', type=Path, metavar='PATH', help='also write the figures as JSON')
    bench.set_defaults(run=_cmd_bench)

    node = commands.add_parser('node', help='run the detector as a ROS 2 node (fusion_node; needs rclpy)')
    node.add_argument('--ros-args', dest='ros_args', nargs=argparse.REMAINDER, default=[],
                      help='everything after it goes to the node as ROS arguments, e.g. '
                           '--ros-args -p params_file:=config/carla.yaml -r __ns:=/vehicle1')
    node.set_defaults(run=_cmd_node)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run: Callable[[argparse.Namespace], Any] = args.run
    try:
        result = run(args)
        if getattr(args, 'json', None) is not None and result is not None:
            write_json(args.json, result)
    except MmfusionError as err:
        print(f'mmfusion {args.command}: error: {err}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f'mmfusion {args.command}: interrupted', file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (``mmfusion inspect BAG | head``): not an error.
        sys.stderr.close()
        return 0
    return 0


if __name__ == '__main__':
    sys.exit(main())
