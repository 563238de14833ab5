"""A generated COCO-format detection dataset of coloured shapes.

``generate_shapes`` draws a small detection dataset with numpy only (no
download, no new dependency): solid shapes of four classes (``square``,
``circle``, ``triangle``, ``cross``) in random colours on textured backgrounds
(a colour gradient, sinusoidal stripes and pixel noise), 1-4 objects of
14-56 px per image. It writes a standard COCO layout::

    root/
        annotations/instances_train.json
        annotations/instances_val.json
        train/000001.png ...
        val/000001.png ...
        meta.json

so plain mmdet (``CocoDataset`` + ``CocoMetric``) can read the same files.
``ShapesDataset`` is mmdet's ``CocoDataset`` that generates the files first,
so detection configs run on a fresh machine.

Boxes are exact: each ``bbox`` ``[x, y, w, h]`` is the tight box of the
shape's drawn pixels in the pixel-area convention (pixel ``(row, col)`` covers
``[col, col + 1) x [row, row + 1)``), so ``x``/``y`` are the first column/row
and ``w``/``h`` the numbers of columns/rows; ``area`` is the number of drawn
pixels. Shapes never touch (a 2 px gap at least), so nothing is occluded and
every drawn pixel is visible; boxes may overlap a little (IoU <= 0.3).

Masks are exact too: each annotation's ``segmentation`` is the shape's drawn
pixels as an uncompressed COCO RLE (``{'size': [h, w], 'counts': [...]}``,
column-major run lengths starting with a run of zeros), the format
pycocotools' ``frPyObjects`` reads. mmdet's ``CocoDataset`` gives it to each
instance as ``mask``, so ``LoadAnnotations(with_mask=True)`` yields the exact
``BitmapMasks`` and ``CocoMetric(metric='segm')`` scores instance masks;
box-only pipelines (``with_mask`` False) never read it.

Every image is drawn from its own random generator seeded with
``(seed, split, index)``, so the output is byte-identical on every run (PNGs
are written by a small deterministic encoder) and image ``i`` of a split does
not depend on the size of the split.
"""
import copy
import json
import os
import os.path as osp
import shutil
import struct
import time
import uuid
import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np
from mmdet.datasets import CocoDataset

from mmgpd.registry import DATASETS

__all__ = [
    'SHAPES_CLASSES', 'SHAPES_PALETTE', 'generate_shapes',
    'render_shapes_image', 'mask_to_rle', 'ShapesDataset'
]

#: Bumped whenever the drawn content or the file layout changes, so an old
#: set on disk is regenerated.
SHAPES_VERSION = 2  # 2: instance masks (``segmentation``, RLE)
#: The classes, in category-id order (category id = position + 1).
SHAPES_CLASSES = ('square', 'circle', 'triangle', 'cross')
#: Visualisation colours of the classes.
SHAPES_PALETTE = [(220, 20, 60), (0, 120, 255), (0, 170, 60), (255, 160, 0)]
#: The two splits and the id used to seed their images.
SPLITS = ('train', 'val')
_SPLIT_IDS = {'train': 0, 'val': 1}

#: Object side lengths are drawn uniformly from ``MIN_SIZE..max_size``,
#: ``max_size = min(MAX_SIZE, img_size // 2)``.
MIN_SIZE = 14
MAX_SIZE = 56
#: Objects per image: ``1..MAX_OBJECTS``.
MAX_OBJECTS = 4
#: Minimum gap (pixels, Chebyshev distance) between the pixels of two shapes.
GAP = 2
#: Largest IoU allowed between two boxes of an image.
MAX_BOX_IOU = 0.3
#: Placement tries per object before giving up on it.
PLACEMENT_TRIES = 50
#: Temporary / discarded directories older than this (seconds) are left-overs
#: of killed runs and are removed.
STALE_SECONDS = 3600
_GENERATOR = 'mmgpd.datasets.shapes'


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------
def _check_params(num_train: int, num_val: int, img_size: int,
                  seed: int) -> Dict[str, int]:
    params = dict(num_train=num_train, num_val=num_val, img_size=img_size,
                  seed=seed)
    for name, value in params.items():
        if isinstance(value, bool) or int(value) != value:
            raise ValueError(f'{name} must be an integer, got {value!r}')
        params[name] = int(value)
    for name in ('num_train', 'num_val'):
        if params[name] < 1:
            raise ValueError(f'{name} must be >= 1, got {params[name]}')
    if params['img_size'] < 2 * (MIN_SIZE + 2):
        raise ValueError(
            f'img_size must be >= {2 * (MIN_SIZE + 2)}, got {img_size}')
    if params['seed'] < 0:
        raise ValueError(f'seed must be >= 0, got {seed}')
    return params


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A float ``size x size x 3`` texture: gradient + stripes + noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    # Linear gradient between two random colours in a random direction.
    c0 = rng.uniform(0, 255, 3)
    c1 = rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-12)
    img = c0 + (c1 - c0) * t[..., None]
    # Sinusoidal stripes, a random amplitude per channel.
    freq = rng.uniform(2.0, 12.0)
    angle = rng.uniform(0, np.pi)
    phase = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(-40.0, 40.0, 3)
    stripes = np.sin(2 * np.pi * freq *
                     (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    img = img + stripes[..., None] * amp
    # Pixel noise.
    img = img + rng.normal(0.0, rng.uniform(3.0, 12.0), (size, size, 3))
    return img


def _shape_mask(label: int, side: int,
                rng: np.random.Generator) -> np.ndarray:
    """A boolean ``side x side`` mask of a shape of class ``label``."""
    # Pixel centres in patch coordinates.
    y, x = np.mgrid[0:side, 0:side].astype(np.float64) + 0.5
    name = SHAPES_CLASSES[label]
    if name == 'square':
        return np.ones((side, side), dtype=bool)
    if name == 'circle':
        r = side / 2.0
        return (x - r)**2 + (y - r)**2 <= r * r
    if name == 'triangle':
        # Isosceles, apex up; turned by a random multiple of 90 degrees.
        s = float(side)
        left = (s / 2.0) * y - s * (s / 2.0 - x) >= 0  # right of apex->BL
        right = (s / 2.0) * y - s * (x - s / 2.0) >= 0  # left of apex->BR
        mask = left & right & (y <= s)
        return np.rot90(mask, int(rng.integers(4))).copy()
    if name == 'cross':
        half = side * rng.uniform(0.12, 0.2)
        c = side / 2.0
        return (np.abs(x - c) <= half) | (np.abs(y - c) <= half)
    raise ValueError(f'unknown shape class {label}')


def _tight_box(mask: np.ndarray) -> List[int]:
    """``[x, y, w, h]`` of the ``True`` pixels (pixel-area convention)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [
        int(cols[0]),
        int(rows[0]),
        int(cols[-1] - cols[0] + 1),
        int(rows[-1] - rows[0] + 1)
    ]


def mask_to_rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE of a boolean ``H x W`` mask.

    ``counts`` are the run lengths of the mask read column by column
    (Fortran order), alternating 0-runs and 1-runs and starting with a
    (possibly empty) 0-run; ``size`` is ``[H, W]``. pycocotools'
    ``frPyObjects`` / mmdet's ``LoadAnnotations`` decode it back to ``mask``
    exactly.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f'mask must be 2-D, got shape {mask.shape}')
    flat = mask.ravel(order='F').astype(np.int8)
    # positions where the value changes, plus both ends
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts  # runs start with zeros
    return dict(size=[int(mask.shape[0]), int(mask.shape[1])],
                counts=[int(c) for c in counts])


def _box_iou(a: List[int], b: List[int]) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a ``(2 radius + 1)`` square (no scipy)."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def render_shapes_image(seed: int, split: str, index: int,
                        img_size: int = 128
                        ) -> Tuple[np.ndarray, List[dict]]:
    """Draw image ``index`` of ``split`` exactly as ``generate_shapes`` does.

    Args:
        seed (int): The dataset seed.
        split (str): ``'train'`` or ``'val'``.
        index (int): 0-based image index in the split (the image id is
            ``index + 1``).
        img_size (int): Side length of the square image.

    Returns:
        tuple: ``(img, objects)``: ``img`` is a ``uint8`` RGB
        ``img_size x img_size x 3`` array; ``objects`` a list of dicts with
        ``label`` (0-based class index), ``mask`` (bool ``H x W``, the drawn
        pixels), ``bbox`` (``[x, y, w, h]``, tight box of ``mask``), ``area``
        (pixels in ``mask``) and ``color`` (RGB tuple).
    """
    rng = np.random.default_rng([int(seed), _SPLIT_IDS[split], int(index)])
    size = int(img_size)
    bg = _background(rng, size)
    img = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
    max_side = min(MAX_SIZE, size // 2)
    n_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    occupied = np.zeros((size, size), dtype=bool)  # shapes dilated by GAP
    objects: List[dict] = []
    for _ in range(n_objects):
        for _ in range(PLACEMENT_TRIES):
            label = int(rng.integers(len(SHAPES_CLASSES)))
            side = int(rng.integers(MIN_SIZE, max_side + 1))
            x0 = int(rng.integers(0, size - side + 1))
            y0 = int(rng.integers(0, size - side + 1))
            patch = _shape_mask(label, side, rng)
            mask = np.zeros((size, size), dtype=bool)
            mask[y0:y0 + side, x0:x0 + side] = patch
            if (mask & occupied).any():
                continue
            bbox = _tight_box(mask)
            if any(_box_iou(bbox, o['bbox']) > MAX_BOX_IOU for o in objects):
                continue
            # A colour that stands out from the background under the shape.
            under = bg[mask].mean(axis=0)
            for _ in range(20):
                color = rng.integers(0, 256, 3)
                if np.linalg.norm(color - under) >= 100:
                    break
            img[mask] = color.astype(np.uint8)
            occupied |= _dilate(mask, GAP)
            objects.append(
                dict(label=label, mask=mask, bbox=bbox,
                     area=int(mask.sum()),
                     color=tuple(int(c) for c in color)))
            break
    return img, objects


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------
def _png_bytes(img: np.ndarray) -> bytes:
    """Encode a ``uint8`` ``H x W x 3`` RGB array as a PNG (deterministic).

    Each row is stored with PNG filter 1 ("Sub"), compressed by zlib level 9.
    """
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w, c = img.shape
    assert c == 3
    sub = img.copy()
    sub[:, 1:] = img[:, 1:] - img[:, :-1]  # uint8 arithmetic wraps mod 256
    raw = np.empty((h, 1 + w * c), dtype=np.uint8)
    raw[:, 0] = 1  # filter type "Sub" (bpp = 3)
    raw[:, 1:] = sub.reshape(h, w * c)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack('>I', len(data)) + tag + data +
                struct.pack('>I', zlib.crc32(tag + data) & 0xffffffff))

    header = struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) +
            chunk(b'IDAT', zlib.compress(raw.tobytes(), 9)) +
            chunk(b'IEND', b''))


def _dump_json(obj, path: str) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, sort_keys=True, separators=(',', ':'))
        f.write('\n')


def _expected_meta(params: Dict[str, int]) -> dict:
    return dict(generator=_GENERATOR, version=SHAPES_VERSION,
                classes=list(SHAPES_CLASSES), **params)


def _read_meta(root: str) -> Optional[dict]:
    try:
        with open(osp.join(root, 'meta.json'), encoding='utf-8') as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _is_complete(root: str, expected: dict) -> bool:
    """Whether ``root`` holds a finished set generated with ``expected``."""
    meta = _read_meta(root)
    if meta is None or any(meta.get(k) != v for k, v in expected.items()):
        return False
    return all(
        osp.isfile(osp.join(root, 'annotations', f'instances_{s}.json'))
        for s in SPLITS)


def _is_ours(root: str) -> bool:
    """Whether ``root`` may be replaced: absent, empty, or a shapes set."""
    if not osp.lexists(root):
        return True
    if not osp.isdir(root) or osp.islink(root):
        return False
    if not os.listdir(root):
        return True
    meta = _read_meta(root)
    return meta is not None and meta.get('generator') == _GENERATOR


def _write_split(tmp: str, split: str, num: int, img_size: int,
                 seed: int) -> int:
    os.makedirs(osp.join(tmp, split))
    images, annotations = [], []
    for index in range(num):
        img, objects = render_shapes_image(seed, split, index, img_size)
        img_id = index + 1
        file_name = f'{img_id:06d}.png'
        with open(osp.join(tmp, split, file_name), 'wb') as f:
            f.write(_png_bytes(img))
        images.append(dict(id=img_id, file_name=file_name, height=img_size,
                           width=img_size))
        for obj in objects:
            annotations.append(
                dict(id=len(annotations) + 1, image_id=img_id,
                     category_id=obj['label'] + 1, bbox=obj['bbox'],
                     area=obj['area'], iscrowd=0,
                     segmentation=mask_to_rle(obj['mask'])))
    coco = dict(
        info=dict(description=f'mmgpd shapes ({split})',
                  version=str(SHAPES_VERSION)),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[
            dict(id=i + 1, name=name, supercategory='shape')
            for i, name in enumerate(SHAPES_CLASSES)
        ])
    _dump_json(coco, osp.join(tmp, 'annotations', f'instances_{split}.json'))
    return len(annotations)


def _remove_stale(parent: str, name: str) -> None:
    """Best-effort removal of old temporary dirs of killed generators."""
    prefixes = (f'.{name}.tmp-', f'.{name}.old-')
    now = time.time()
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(prefixes):
            continue
        path = osp.join(parent, entry)
        try:
            if now - os.stat(path).st_mtime > STALE_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def _install(tmp: str, root: str, expected: dict) -> bool:
    """Rename ``tmp`` to ``root``; False if another process won the race."""
    parent, name = osp.split(root)
    for _ in range(20):
        try:
            # Atomic; also replaces an empty directory on POSIX.
            os.rename(tmp, root)
            return True
        except OSError:
            if not osp.lexists(root):
                continue  # moved away meanwhile: try again
        if _is_complete(root, expected):
            return False  # another generator finished first
        if not _is_ours(root):
            raise FileExistsError(
                f'{root} exists and is not a generated shapes set; '
                'refusing to replace it')
        # An outdated set (other parameters or version): move it aside.
        trash = osp.join(parent, f'.{name}.old-{uuid.uuid4().hex}')
        try:
            os.rename(root, trash)
        except OSError:
            continue
        shutil.rmtree(trash, ignore_errors=True)
    raise RuntimeError(f'could not install the shapes set at {root}')


def generate_shapes(root: str,
                    *,
                    num_train: int = 300,
                    num_val: int = 100,
                    img_size: int = 128,
                    seed: int = 0) -> dict:
    """Write the shapes detection dataset to ``root`` unless it is there.

    The set is generated in a temporary directory beside ``root`` and renamed
    into place at the end, so ``root`` is either absent or complete. When
    ``root`` already holds a set generated with the same parameters (its
    ``meta.json``), nothing is done. Several processes (e.g. distributed
    ranks) may call this at once: the first rename wins and the others
    discard their copies. An outdated set (other parameters, older version)
    is replaced; any other non-empty ``root`` raises ``FileExistsError``.

    Args:
        root (str): The dataset directory.
        num_train (int): Training images. Defaults to 300.
        num_val (int): Validation images. Defaults to 100.
        img_size (int): Side of the square images, at least 32.
            Defaults to 128.
        seed (int): The seed. Defaults to 0.

    Returns:
        dict: The set's ``meta.json`` contents (``generator``, ``version``,
        ``classes``, the parameters, ``num_instances`` per split) plus
        ``root`` (absolute path) and ``generated`` (False if the set was
        already there or another process installed it first).
    """
    params = _check_params(num_train, num_val, img_size, seed)
    expected = _expected_meta(params)
    root = osp.abspath(os.fspath(root))
    if _is_complete(root, expected):
        return dict(_read_meta(root), root=root, generated=False)
    if not _is_ours(root):
        raise FileExistsError(
            f'{root} exists and is not a generated shapes set; refusing '
            'to replace it (choose another data_root)')
    parent, name = osp.split(root)
    os.makedirs(parent, exist_ok=True)
    _remove_stale(parent, name)
    tmp = osp.join(parent, f'.{name}.tmp-{os.getpid()}-{uuid.uuid4().hex}')
    os.mkdir(tmp)
    try:
        os.makedirs(osp.join(tmp, 'annotations'))
        counts = {}
        for split in SPLITS:
            counts[split] = _write_split(tmp, split, params[f'num_{split}'],
                                         params['img_size'], params['seed'])
        meta = dict(expected, num_instances=counts)
        _dump_json(meta, osp.join(tmp, 'meta.json'))  # last: marks complete
        generated = _install(tmp, root, expected)
    finally:
        if osp.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return dict(_read_meta(root) or meta, root=root, generated=generated)


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------
def _plain(obj):
    """Deep copy of ``obj`` with (Config)dicts as dicts and tuples kept."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    return copy.deepcopy(obj)


@DATASETS.register_module()
class ShapesDataset(CocoDataset):
    """mmdet's ``CocoDataset`` on the generated shapes set.

    Before loading, the set is generated into ``data_root`` (a no-op when it
    is already there, see :func:`generate_shapes`). Use the same shapes
    parameters for every dataset sharing a ``data_root``: other parameters
    regenerate the set.

    Args:
        data_root (str): Dataset directory. Defaults to ``'data/shapes'``.
        ann_file (str): Annotation file, relative to ``data_root``.
            Defaults to ``'annotations/instances_train.json'``.
        data_prefix (dict): Image folder, relative to ``data_root``.
            Defaults to ``dict(img='train/')``.
        generate (bool): Whether to generate the set first.
            Defaults to True.
        num_train, num_val, img_size, seed: See :func:`generate_shapes`.
        **kwargs: Other arguments of ``mmdet.datasets.CocoDataset``
            (``pipeline``, ``test_mode``, ``filter_cfg``, ...).
    """

    METAINFO = dict(classes=SHAPES_CLASSES, palette=list(SHAPES_PALETTE))
    #: The plain mmdet dataset type reading the same files.
    PLAIN_TYPE = 'CocoDataset'
    #: Constructor defaults that the plain config spells out.
    DEFAULTS = dict(data_root='data/shapes',
                    ann_file='annotations/instances_train.json',
                    data_prefix=dict(img='train/'))
    #: Constructor arguments only this class knows.
    SHAPES_KEYS = ('generate', 'num_train', 'num_val', 'img_size', 'seed')

    def __init__(self,
                 data_root: str = DEFAULTS['data_root'],
                 ann_file: str = DEFAULTS['ann_file'],
                 data_prefix: dict = DEFAULTS['data_prefix'],
                 generate: bool = True,
                 num_train: int = 300,
                 num_val: int = 100,
                 img_size: int = 128,
                 seed: int = 0,
                 **kwargs) -> None:
        self.shapes_params = _check_params(num_train, num_val, img_size, seed)
        if generate:
            generate_shapes(data_root, **self.shapes_params)
        super().__init__(data_root=data_root, ann_file=ann_file,
                         data_prefix=copy.deepcopy(dict(data_prefix)),
                         **kwargs)

    @classmethod
    def plain_cfg(cls, cfg: dict) -> dict:
        """An equivalent plain mmdet ``CocoDataset`` config of ``cfg``.

        ``cfg`` is a config dict of this dataset (``type`` ``ShapesDataset``,
        ``mmgpd.ShapesDataset`` or the class). The result has
        ``type='CocoDataset'``, the same ``data_root`` / ``ann_file`` /
        ``data_prefix`` (defaults spelled out), the classes and palette as an
        explicit ``metainfo`` (merged under any ``metainfo`` of ``cfg``), all
        other keys (``pipeline``, ``test_mode``, ``filter_cfg``, ...) as they
        are, and no shapes-only keys. It reads the files written by this
        dataset without mmgpd, but does not generate them.
        """
        cfg = _plain(dict(cfg))
        kind = cfg.pop('type', cls)
        if kind not in (cls, cls.__name__, f'mmgpd.{cls.__name__}'):
            raise ValueError(
                f'not a {cls.__name__} config: type={kind!r}')
        for key in cls.SHAPES_KEYS:
            cfg.pop(key, None)
        for key, value in cls.DEFAULTS.items():
            cfg.setdefault(key, copy.deepcopy(value))
        metainfo = dict(classes=tuple(cls.METAINFO['classes']),
                        palette=[tuple(c) for c in cls.METAINFO['palette']])
        metainfo.update(cfg.pop('metainfo', None) or {})
        return dict(type=cls.PLAIN_TYPE, metainfo=metainfo, **cfg)
