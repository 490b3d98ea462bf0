"""Procedural dermoscopy-like lesion images, written in the ISIC Archive on-disk layout.

Everything here runs offline with numpy + PIL, so demos and tests never need ISIC. An image is
built as a dermatoscope sees it:

* **skin**: a per-patient tone (light to dark), low-frequency tone and redness variation and a
  fine texture (fractal noise: a few octaves of bicubically upsampled random grids);
* **lesion**: melanin modelled as an absorbing density ``D`` over the skin
  (``rgb = skin * exp(-D * k)``, blue absorbed most, so it turns brown on any skin tone), inside
  a border ``R(theta) = R0 * (1 + sum_k a_k cos(k theta + phi_k))`` made irregular by a noise
  field and given a soft edge; a pigment network (a warped hexagonal lattice), globules / dots,
  and for melanoma black blotches, a blue-grey veil and white regression areas on top;
* optional **hairs** (thin dark curved lines, ``hair_probability``);
* the dark circular **vignette** of the dermatoscope (black outside a soft-edged circle, with a
  slight light fall-off towards its rim).

The two classes differ visibly and on purpose (``tests/test_synthetic.py`` checks the
direction of each difference from the pixels):

============  ==============================================  ===============================================
              ``nevus`` (benign)                              ``melanoma`` (malignant)
============  ==============================================  ===============================================
size          small: ``R0`` in 0.17-0.30 of the half-width    large: ``R0`` in 0.36-0.50 of the half-width
shape         nearly symmetric: an elliptic term a_2 <= 0.12  asymmetric: a_1 (egg shape) 0.06-0.16, a_2..a_5
              (point-symmetric), a_3..a_6 below 0.025         up to 0.18 / 0.11, a_6..a_12 and noise notches
border        uniformly soft edge                             edge sharpness varies around the lesion
colours       one light-to-dark brown, smooth, darker centre  mottled dark brown + black blotches + blue-grey
                                                              veil + white (regression) areas, off-centre
structure     regular fine network fading to the periphery,   atypical network (thick, distorted, patchy),
              or evenly spaced similar globules               irregular black dots clustered on one side
============  ==============================================  ===============================================


The ISIC-layout dataset built from these pictures is written by :mod:`lesion_lightning.data.synthetic`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES: tuple[str, ...] = ("nevus", "melanoma")
# Bumped whenever the pictures change, so a cached folder from an older generator no longer matches.
GENERATOR_VERSION = 1
_GRID = 64  # resolution of every random field grid
_SKIN_EXTENT = 2.0  # skin fields cover [-2, 2]^2: rotated/shifted/zoomed views never leave it
_LESION_EXTENT = 1.0  # lesion fields cover [-1, 1]^2 around the lesion centre (its largest radius < 1)
_ANGLES = 1024  # angular resolution of the border look-up tables
# Melanin absorption per channel (R, G, B): blue is absorbed most, so pigment looks brown.
_MELANIN = np.array([0.80, 1.10, 1.45], dtype=np.float32)
_LIGHT_SKIN = np.array([236.0, 190.0, 172.0])
_MEDIUM_SKIN = np.array([205.0, 150.0, 122.0])
_DARK_SKIN = np.array([128.0, 84.0, 62.0])


# ----------------------------------------------------------------------------------------------
# random fields and coordinates
# ----------------------------------------------------------------------------------------------
@functools.cache
def _upsampler(n: int) -> np.ndarray:
    """(_GRID, n) matrix doing PIL's bicubic 1-D resize n -> _GRID, so ``U @ X @ U.T`` upsamples a grid."""
    eye = Image.fromarray(np.eye(n, dtype=np.float32))  # row i is the impulse e_i
    up = np.asarray(eye.resize((_GRID, n), Image.Resampling.BICUBIC))  # (n, _GRID): row i = response to e_i
    up = np.ascontiguousarray(up.T)
    up.flags.writeable = False  # shared through the cache
    return up


def _fractal_grid(rng: np.random.Generator, beta: float, octaves: tuple[int, ...]) -> np.ndarray:
    """A (_GRID, _GRID) zero-mean unit-variance noise field, amplitude ~ 1 / frequency**beta."""
    out = np.zeros((_GRID, _GRID), dtype=np.float32)
    for n in octaves:
        up = _upsampler(n)
        out += (up @ rng.standard_normal((n, n), dtype=np.float32) @ up.T) * np.float32(n ** -float(beta))
    out -= out.mean()
    return out / max(float(out.std()), 1e-6)


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _scaling(s: float) -> np.ndarray:
    return np.diag([s, s, 1.0])


def _sample_field(grid: np.ndarray, pix_to_frame: np.ndarray, extent: float, size: int) -> np.ndarray:
    """Resample a field grid (covering [-extent, extent]^2 of its frame) onto the output pixels.

    ``pix_to_frame`` maps continuous pixel coordinates (centres at i + 0.5, as PIL uses) to the
    field's frame; PIL's affine transform does the bilinear resampling in C.
    """
    g = grid.shape[0] / (2.0 * extent)
    frame_to_grid = np.array([[g, 0.0, g * extent], [0.0, g, g * extent], [0.0, 0.0, 1.0]])
    data = tuple((frame_to_grid @ pix_to_frame)[:2].ravel().tolist())
    out = Image.fromarray(grid).transform(
        (size, size), Image.Transform.AFFINE, data=data, resample=Image.Resampling.BILINEAR
    )
    return np.asarray(out)


def _frame_coords(pix_to_frame: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame coordinates of every pixel centre: two (H, W) float32 arrays."""
    c = (np.arange(size, dtype=np.float32) + 0.5)[None, :]
    r = (np.arange(size, dtype=np.float32) + 0.5)[:, None]
    m = pix_to_frame.astype(np.float32)
    return m[0, 0] * c + m[0, 1] * r + m[0, 2], m[1, 0] * c + m[1, 1] * r + m[1, 2]


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _harmonic_table(base: float, amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """``base * (1 + sum_k amps[k-1] cos(k t + phases[k-1]))`` tabulated on _ANGLES angles in [-pi, pi)."""
    t = np.linspace(-np.pi, np.pi, _ANGLES, endpoint=False)
    k = np.arange(1, len(amps) + 1)[:, None]
    return (base * (1.0 + (amps[:, None] * np.cos(k * t + phases[:, None])).sum(0))).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# lesion (fixed across views) and view (per image) parameters
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lesion:
    """Everything that stays the same when a lesion is photographed again."""

    diagnosis: str
    skin_rgb: np.ndarray  # (3,) base skin colour, 0-255
    skin_fields: np.ndarray  # (3, G, G): tone, redness, texture, in the skin frame
    lesion_fields: np.ndarray  # (6, G, G): border notches, density, warp x, warp y, regions a/b
    centre: tuple[float, float]  # lesion centre in the skin frame
    orientation: float
    radius_table: np.ndarray  # (_ANGLES,) border radius R(theta)
    edge_table: np.ndarray  # (_ANGLES,) edge softness per angle
    notch: float  # strength of the border noise
    density: float  # base melanin density
    centre_gain: float  # extra density towards the centre
    mottle: float  # density variation from the density field
    side: tuple[float, float, float]  # (dx, dy, gain): density gradient across the lesion
    absorption: np.ndarray  # (3,) melanin absorption, jittered per lesion
    network: tuple[float, float, float, float]  # (strength, cell size, warp, line threshold)
    network_patchy: bool
    globules: np.ndarray  # (N, 4): x, y, radius (lesion frame), added density
    black: float  # strength of black blotches
    blue: float  # strength of the blue-grey veil
    white: float  # strength of white regression areas
    region_bias: tuple[float, float]  # direction that black/blue areas favour


@dataclass(frozen=True)
class View:
    """One photograph of a lesion: camera pose, lighting, hairs and vignette."""

    angle: float
    shift: tuple[float, float]
    zoom: float
    gain: np.ndarray  # (3,) brightness and white balance
    vignette: tuple[float, float, float, float]  # centre x, centre y, radius, edge width
    falloff: float
    hairs: tuple[tuple[float, ...], ...]  # per hair: x0, y0, angle, length, bend, width, darkness
    noise_seed: int


def skin_tone(rng: np.random.Generator) -> np.ndarray:
    """Skin colour from light to dark; skewed towards light skin, like the ISIC archive."""
    t = float(rng.beta(1.3, 3.0))
    base = (
        _LIGHT_SKIN + (_MEDIUM_SKIN - _LIGHT_SKIN) * (t / 0.5)
        if t < 0.5
        else _MEDIUM_SKIN + (_DARK_SKIN - _MEDIUM_SKIN) * ((t - 0.5) / 0.5)
    )
    return np.clip(base * rng.uniform(0.95, 1.04, 3), 0, 255)


def sample_lesion(diagnosis: str, rng: np.random.Generator, skin_rgb: np.ndarray | None = None) -> Lesion:
    """A random lesion of class ``diagnosis`` (see the module docstring's table), on ``skin_rgb``."""
    if diagnosis not in CLASSES:
        raise ValueError(f"diagnosis must be one of {CLASSES}, got {diagnosis!r}")
    mel = diagnosis == "melanoma"
    skin_rgb = skin_tone(rng) if skin_rgb is None else np.asarray(skin_rgb, dtype=np.float64)
    skin_fields = np.stack(
        [
            _fractal_grid(rng, 2.0, (2, 4, 8)),  # broad tone variation
            _fractal_grid(rng, 1.5, (4, 8, 16)),  # erythema patches
            _fractal_grid(rng, 0.3, (16, 32, 64)),  # fine texture
        ]
    )
    lesion_fields = np.stack(
        [
            _fractal_grid(rng, 1.0, (4, 8, 16, 32)),  # border notches
            _fractal_grid(rng, 1.2, (4, 8, 16, 32)),  # density mottling
            _fractal_grid(rng, 1.0, (8, 16, 32)),  # network warp x
            _fractal_grid(rng, 1.0, (8, 16, 32)),  # network warp y
            _fractal_grid(rng, 1.5, (4, 8, 16)),  # colour regions a (black / network patches)
            _fractal_grid(rng, 1.5, (4, 8, 16)),  # colour regions b (blue-grey / white)
        ]
    )
    n_harm = 12
    amps = np.zeros(n_harm)
    if mel:
        radius = rng.uniform(0.36, 0.50)
        amps[0] = rng.uniform(0.06, 0.16)  # egg shape: the main asymmetry
        amps[1] = rng.uniform(0.05, 0.18)
        amps[2:5] = rng.uniform(0.03, 0.11, 3)
        amps[5:] = rng.uniform(0.005, 0.03, n_harm - 5)
        # sharpness varies around the border; exp keeps the width positive: 0.2x to 4x the base
        edge = rng.uniform(0.02, 0.035) * np.exp(
            _harmonic_table(1.0, rng.uniform(0.4, 0.8, 3), rng.uniform(0, 2 * np.pi, 3)) - 1.0
        )
        notch = rng.uniform(0.06, 0.12)
    else:
        radius = rng.uniform(0.17, 0.30)
        amps[1] = rng.uniform(0.0, 0.12)  # an ellipse is still point-symmetric
        amps[2:6] = rng.uniform(0.0, 0.025, 4)
        edge = np.full(_ANGLES, rng.uniform(0.035, 0.07), dtype=np.float32)
        notch = rng.uniform(0.0, 0.02)
    table = _harmonic_table(radius, amps, rng.uniform(0, 2 * np.pi, n_harm))
    side_angle = rng.uniform(0, 2 * np.pi)
    side_dir = (math.cos(side_angle), math.sin(side_angle))
    absorption = (_MELANIN * rng.uniform(0.92, 1.08, 3)).astype(np.float32)

    if mel:
        density = rng.uniform(0.9, 1.4)
        centre_gain, mottle = rng.uniform(-0.1, 0.3), rng.uniform(0.25, 0.45)
        side_gain = rng.uniform(0.2, 0.5)
        network = (
            rng.uniform(0.3, 0.55),
            rng.uniform(0.05, 0.075),
            rng.uniform(0.7, 1.1),
            rng.uniform(0.0, 0.7),
        )
        # irregular dots and globules, crowded towards the periphery on one side
        n_dots = int(rng.integers(10, 30))
        ang = side_angle + rng.normal(0.0, 1.0, n_dots)
        rho = rng.uniform(0.45, 1.0, n_dots)
        rad = np.interp(ang % (2 * np.pi) - np.pi, np.linspace(-np.pi, np.pi, _ANGLES), table)
        globules = np.stack(
            [
                np.cos(ang) * rho * rad,
                np.sin(ang) * rho * rad,
                rng.uniform(0.004, 0.016, n_dots) * rng.choice([1.0, 1.6], n_dots, p=[0.8, 0.2]),
                rng.uniform(0.6, 1.6, n_dots),
            ],
            1,
        )
        black = rng.uniform(0.8, 1.0) if rng.random() < 0.9 else 0.0
        blue = rng.uniform(0.4, 0.6) if rng.random() < 0.8 else 0.0
        white = rng.uniform(0.4, 0.6) if rng.random() < 0.7 else 0.0
    else:
        density = rng.uniform(0.4, 1.1)
        centre_gain, mottle, side_gain = rng.uniform(0.1, 0.4), rng.uniform(0.03, 0.07), 0.0
        network = (
            rng.uniform(0.15, 0.3),
            rng.uniform(0.04, 0.055),
            rng.uniform(0.5, 0.8),
            rng.uniform(-0.5, 0.0),
        )
        if rng.random() < 0.35:  # globular nevus: an even lattice of similar globules
            step = rng.uniform(0.05, 0.07)
            g = np.arange(-radius * 1.3, radius * 1.3 + 1e-9, step)
            gx, gy = np.meshgrid(g, g)
            gx = gx + (np.arange(len(g))[:, None] % 2) * step / 2  # hexagonal packing
            gx = gx + rng.normal(0.0, 0.12 * step, gx.shape)  # regular, not crystalline
            gy = gy + rng.normal(0.0, 0.12 * step, gy.shape)
            keep = (np.hypot(gx, gy) < radius * 0.75) & (rng.random(gx.shape) < 0.85)
            n = int(keep.sum())
            radii = step * rng.uniform(0.22, 0.3) * rng.uniform(0.85, 1.15, n)
            globules = np.stack([gx[keep], gy[keep], radii, np.full(n, rng.uniform(0.35, 0.6))], 1)
            network = (network[0] * 0.3, *network[1:])
        else:
            globules = np.zeros((0, 4))
        black = blue = white = 0.0
    bias_angle = side_angle + rng.normal(0.0, 0.5)
    return Lesion(
        diagnosis=diagnosis,
        skin_rgb=skin_rgb,
        skin_fields=skin_fields,
        lesion_fields=lesion_fields,
        centre=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08))),
        orientation=float(rng.uniform(0, 2 * np.pi)),
        radius_table=table,
        edge_table=edge,
        notch=float(notch),
        density=float(density),
        centre_gain=float(centre_gain),
        mottle=float(mottle),
        side=(side_dir[0], side_dir[1], float(side_gain)),
        absorption=absorption,
        network=tuple(float(v) for v in network),
        network_patchy=mel,
        globules=globules.astype(np.float32),
        black=float(black),
        blue=float(blue),
        white=float(white),
        region_bias=(math.cos(bias_angle), math.sin(bias_angle)),
    )


def sample_view(rng: np.random.Generator, hair_probability: float) -> View:
    """A random photograph setting: small rotation, shift, zoom, lighting, hairs, vignette."""
    pose = dict(
        angle=float(rng.uniform(-0.25, 0.25)),
        shift=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.06, 0.06))),
        zoom=float(rng.uniform(0.93, 1.07)),
        gain=(rng.uniform(0.92, 1.06) * rng.uniform(0.97, 1.03, 3)).astype(np.float32),
        vignette=(
            float(rng.uniform(-0.04, 0.04)),
            float(rng.uniform(-0.04, 0.04)),
            float(rng.uniform(0.9, 1.08)),
            float(rng.uniform(0.015, 0.04)),
        ),
        falloff=float(rng.uniform(0.1, 0.3)),
        noise_seed=int(rng.integers(2**31)),
    )
    # Hairs come from their own generator, drawn last: the hair setting changes nothing else.
    hair_rng = np.random.default_rng(int(rng.integers(2**31)))
    hairs: list[tuple[float, ...]] = []
    if rng.random() < hair_probability:
        for _ in range(int(hair_rng.integers(2, 14))):
            hairs.append(
                (
                    hair_rng.uniform(-1.0, 1.0),  # centre x, y (normalized image coordinates)
                    hair_rng.uniform(-1.0, 1.0),
                    hair_rng.uniform(0, 2 * np.pi),  # direction
                    hair_rng.uniform(0.5, 2.0),  # length
                    hair_rng.normal(0.0, 0.25),  # bend (control point offset / length)
                    hair_rng.uniform(0.008, 0.02),  # width
                    hair_rng.uniform(0.7, 0.95),  # opacity
                )
            )
    return View(hairs=tuple(hairs), **pose)


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------
def _blobs(
    globules: np.ndarray, lesion_to_pix: np.ndarray, px_per_unit: float, size: int, out: np.ndarray
) -> None:
    """Add flat-topped round blobs (globules / dots) to ``out`` (H, W) in place."""
    for x, y, radius, amount in globules:
        cx, cy, _ = lesion_to_pix @ np.array([x, y, 1.0])
        r = max(float(radius) * px_per_unit, 0.5)
        x0, x1 = max(int(cx - 2 * r - 1), 0), min(int(cx + 2 * r + 2), size)
        y0, y1 = max(int(cy - 2 * r - 1), 0), min(int(cy + 2 * r + 2), size)
        if x0 >= x1 or y0 >= y1:
            continue
        xs = np.arange(x0, x1, dtype=np.float32) + 0.5 - cx
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
        d = np.sqrt(xs * xs + ys * ys) / r  # (h, w) distance in radii
        out[y0:y1, x0:x1] += amount * np.clip(1.6 - 1.2 * d, 0.0, 1.0)  # flat top, soft rim


def _hair_mask(hairs: tuple[tuple[float, ...], ...], size: int) -> np.ndarray:
    """Opacity (H, W) in [0, 1] of thin dark curved hairs (quadratic curves in image coordinates)."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    half = size / 2.0
    t = np.linspace(0.0, 1.0, 24)[:, None]
    for x0, y0, angle, length, bend, width, darkness in hairs:
        d = np.array([math.cos(angle), math.sin(angle)])
        n = np.array([-d[1], d[0]])
        p0 = np.array([x0, y0]) - d * length / 2
        p2 = np.array([x0, y0]) + d * length / 2
        p1 = np.array([x0, y0]) + n * bend * length
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # (24, 2) normalized coords
        pix = (pts + 1.0) * half
        w = max(1, round(width * half))
        draw.line([tuple(p) for p in pix.tolist()], fill=int(255 * darkness), width=w, joint="curve")
    if size >= 96:  # anti-alias; at tiny sizes the line is already one pixel
        img = img.filter(ImageFilter.GaussianBlur(0.5 * size / 256))
    return np.asarray(img, dtype=np.float32) / 255.0


def render(lesion: Lesion, view: View, size: int) -> np.ndarray:
    """Render one (size, size, 3) uint8 photograph of ``lesion`` as seen in ``view``."""
    half = size / 2.0
    pix_to_norm = np.array([[1 / half, 0.0, -1.0], [0.0, 1 / half, -1.0], [0.0, 0.0, 1.0]])
    norm_to_skin = (
        _scaling(1 / view.zoom) @ _rotation(-view.angle) @ _translation(-view.shift[0], -view.shift[1])
    )
    skin_to_lesion = _rotation(-lesion.orientation) @ _translation(-lesion.centre[0], -lesion.centre[1])
    pix_to_skin = norm_to_skin @ pix_to_norm
    pix_to_lesion = skin_to_lesion @ pix_to_skin

    # --- skin -------------------------------------------------------------------------------
    tone, red, texture = (_sample_field(f, pix_to_skin, _SKIN_EXTENT, size) for f in lesion.skin_fields)
    grain = np.random.default_rng(view.noise_seed).standard_normal((size, size), dtype=np.float32)
    shade = 1.0 + 0.06 * tone + 0.035 * texture + 0.012 * grain  # (H, W)
    redness = 0.07 * np.clip(red, 0.0, None)  # erythema lowers green and blue
    skin = lesion.skin_rgb.astype(np.float32)[None, None, :] * shade[..., None]
    skin = skin * (1.0 - redness[..., None] * np.array([0.0, 1.0, 0.8], dtype=np.float32))

    # --- lesion geometry ----------------------------------------------------------------------
    qx, qy = _frame_coords(pix_to_lesion, size)  # (H, W) lesion frame
    notches, mottling, warp_x, warp_y, region_a, region_b = (
        _sample_field(f, pix_to_lesion, _LESION_EXTENT, size) for f in lesion.lesion_fields
    )
    r = np.hypot(qx, qy) * (1.0 + lesion.notch * notches)
    idx = ((np.arctan2(qy, qx) + np.pi) * (_ANGLES / (2 * np.pi))).astype(np.int32) % _ANGLES
    border = lesion.radius_table[idx]
    rho = r / border  # 0 at the centre, 1 on the border
    mask = _smoothstep(0.0, 1.0, (border - r) / lesion.edge_table[idx] + 0.5)

    # --- melanin density ----------------------------------------------------------------------
    sx, sy, side_gain = lesion.side
    along = (qx * sx + qy * sy) / lesion.radius_table.mean()  # -1..1 across the lesion
    dens = lesion.density * (
        1.0
        + lesion.centre_gain * (1.0 - np.clip(rho, 0, 1))
        - 0.3 * np.clip(rho, 0, 1) ** 2  # paler towards the border
        + lesion.mottle * mottling
        + side_gain * along
    )
    dens = np.maximum(dens, 0.2)  # melanin only darkens: a negative density would glow brighter than skin
    strength, cell, warp, threshold = lesion.network
    px_per_unit = half * view.zoom
    strength *= float(np.clip((cell * px_per_unit - 2.5) / 3.0, 0.0, 1.0))  # fade where it would alias
    if strength > 0:
        # Hexagonal lattice function: maxima (the holes) on a hexagonal grid, valleys form the mesh.
        u = (qx + warp * cell * warp_x) * (2 * np.pi / cell)
        v = (qy + warp * cell * warp_y) * (2 * np.pi / cell)
        lattice = np.cos(u) + np.cos(-0.5 * u + 0.866 * v) + np.cos(-0.5 * u - 0.866 * v)  # [-1.5, 3]
        # holes of uneven size; a higher threshold means thicker lines
        lattice = lattice + 0.5 * warp * mottling
        lines = 1.0 - _smoothstep(threshold - 0.35, threshold + 0.35, lattice)
        lines *= np.clip(0.75 + 0.25 * texture, 0.3, 1.2)
        if lesion.network_patchy:  # atypical: only in patches, thick where present
            lines *= _smoothstep(-0.3, 0.4, region_a + 0.3 * notches)
        else:  # typical: fades out towards the periphery
            lines *= _smoothstep(1.0, 0.45, rho)
        dens = dens + strength * lines
    dens = dens * mask * (1.0 + 0.06 * texture)
    if len(lesion.globules):
        _blobs(lesion.globules, np.linalg.inv(pix_to_lesion), px_per_unit, size, dens)
    bx, by = lesion.region_bias
    bias = (qx * bx + qy * by) / lesion.radius_table.mean()
    if lesion.black > 0:
        dens = dens + mask * 1.6 * lesion.black * _smoothstep(0.2, 0.8, region_a + 0.8 * bias)
    rgb = skin * np.exp(-dens[..., None] * lesion.absorption)

    # --- melanoma overlays: blue-grey veil and white regression --------------------------------
    lum = float(lesion.skin_rgb.mean()) / 180.0
    if lesion.blue > 0:
        a = mask * lesion.blue * _smoothstep(0.5, 1.2, region_b + 0.4 * bias)
        # blotchy, not a flat coat
        a = (a * np.clip(0.6 + 0.3 * mottling + 0.2 * texture, 0.0, 1.0))[..., None]
        veil = np.array([118.0, 124.0, 145.0], dtype=np.float32) * min(lum, 1.1)
        rgb = rgb * (1 - a) + veil * a
    if lesion.white > 0:
        a = mask * lesion.white * _smoothstep(0.9, 1.5, -region_b - 0.3 * bias + 0.4 * mottling)
        a = (a * np.clip(0.7 + 0.3 * texture + 0.05 * grain, 0.0, 1.0))[..., None]  # scar-like, granular
        scar = np.array([208.0, 192.0, 194.0], dtype=np.float32) * min(max(lum, 0.85), 1.05)
        rgb = rgb * (1 - a) + scar * a

    # --- hairs, lighting, vignette -------------------------------------------------------------
    if view.hairs:
        a = _hair_mask(view.hairs, size)[..., None]
        rgb = rgb * (1 - a) + np.array([38.0, 26.0, 20.0], dtype=np.float32) * a
    vx, vy = _frame_coords(pix_to_norm, size)
    cx, cy, radius, width = view.vignette
    rr = np.hypot(vx - cx, vy - cy) / radius  # 1 on the vignette circle
    light = (1.0 - view.falloff * rr**4) * _smoothstep(1.0 + width, 1.0 - width, rr)
    rgb = rgb * (light[..., None] * view.gain) + 6.0 * (1.0 - light[..., None])
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def render_lesion(
    image_size: int, diagnosis: str, rng: np.random.Generator, hair_probability: float = 0.3
) -> np.ndarray:
    """Render one random dermoscopy-like image of class ``diagnosis``: (H, W, 3) uint8.

    All randomness comes from ``rng``, so a generator seeded the same way gives the same image.
    """
    if diagnosis not in CLASSES:
        raise ValueError(f"diagnosis must be one of {CLASSES}, got {diagnosis!r}")
    check_size(image_size)
    lesion = sample_lesion(diagnosis, rng)
    return render(lesion, sample_view(rng, hair_probability), image_size)


def check_size(image_size: int) -> None:
    """Images smaller than 16 px cannot hold a lesion, its border and the vignette."""
    if not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
