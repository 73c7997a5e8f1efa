"""The one typestore every message conversion uses, and CDR (de)serialisation that fails our way.

rosbags ships the ROS 2 Humble core definitions but not vision_msgs or radar_msgs, which our outputs
and radar inputs need; their ``.msg`` files travel with this package (``definitions/<pkg>/msg``) and
are registered here once, so no ROS installation or colcon build is needed to read or write them.

rosbags reports bad bytes with several exception types (its own ``SerdeError``, ``struct.error``,
``ValueError``, ``IndexError`` ...); callers get a single ``DecodeError`` / ``EncodeError`` that names
the topic and type instead.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from mmfusion_ros.errors import DecodeError, EncodeError

__all__ = [
    'deserialize',
    'serialize',
    'shipped_msgtypes',
    'typestore',
]


def _shipped_definitions() -> dict[str, str]:
    """``{'pkg/msg/Name': msg text}`` for every ``definitions/<pkg>/msg/<Name>.msg`` in this package."""
    root = resources.files('mmfusion_ros.msgs') / 'definitions'
    texts = {}
    for package in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name):
        msg_dir = package / 'msg'
        if not msg_dir.is_dir():
            continue
        for entry in sorted(msg_dir.iterdir(), key=lambda p: p.name):
            if entry.name.endswith('.msg'):
                texts[f'{package.name}/msg/{entry.name[:-4]}'] = entry.read_text(encoding='utf-8')
    return texts


def shipped_msgtypes() -> tuple[str, ...]:
    """The message types this package adds to the ROS 2 Humble store, sorted."""
    return tuple(sorted(_shipped_definitions()))


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """The ROS 2 Humble typestore plus every shipped definition, built on first use.

    ``get_typestore`` hands out a fresh store per call, so registering into ours leaves any other
    store (a bag reader's, say) untouched. Names without a package inside a ``.msg`` file
    (``BoundingBox3D bbox``) resolve against that file's own package, as in ROS.
    """
    store = get_typestore(Stores.ROS2_HUMBLE)
    types = {}
    for msgtype, text in _shipped_definitions().items():
        types.update(get_types_from_msg(text, msgtype))
    store.register(types)
    return store


def deserialize(raw: bytes | memoryview, msgtype: str, topic: str = '') -> object:
    """CDR bytes to a message object of ``msgtype``; any failure is a one-line ``DecodeError``."""
    where = topic or msgtype
    store = typestore()
    if msgtype not in store.types:
        raise DecodeError(f'{where}: unknown message type {msgtype!r}')
    try:
        return store.deserialize_cdr(raw, msgtype)
    except Exception as err:  # noqa: BLE001 - rosbags raises many kinds for bad bytes
        detail = ' '.join(str(err).split()) or type(err).__name__
        raise DecodeError(f'{where}: cannot deserialize {len(raw)} bytes as {msgtype}: {detail}') from err


def serialize(msg: object, msgtype: str) -> bytes:
    """A message object to little-endian CDR bytes; any failure is a one-line ``EncodeError``."""
    store = typestore()
    if msgtype not in store.types:
        raise EncodeError(f'unknown message type {msgtype!r}')
    try:
        return bytes(store.serialize_cdr(msg, msgtype, little_endian=True))
    except Exception as err:  # noqa: BLE001 - out-of-range ints, wrong types, missing fields ...
        detail = ' '.join(str(err).split()) or type(err).__name__
        raise EncodeError(f'cannot serialize {msgtype}: {detail}') from err
