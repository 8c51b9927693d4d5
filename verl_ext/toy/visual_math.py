"""Visual-math problems drawn with PIL, written in verl's multimodal parquet format (its geo3k layout).

Three tasks, each answerable only from the image: ``count`` the shapes of a colour and kind among distractors,
``sum`` the 2-3 numbers printed, ``compare`` which of two bars (A or B) is longer. Example ``index`` of
``split`` is drawn from a seed derived from ``(config.seed, split, index)``: deterministic, disjoint splits.

    python -m verl_ext.toy.visual_math out=/tmp/visual_math n_train=256 n_test=64 [layout=hub]
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from verl_ext.data.schema import arrow_schema, build_row
from verl_ext.files import build_once, write_parquet

logger = logging.getLogger(__name__)

# Bump when generation changes so ensure_dataset rewrites stale files.
BUILD_VERSION = 3  # 3: a scene repeated in either split is replaced by the next draw (dataset_scenes)
DATA_SOURCE = "verl_ext/visual_math"
MANIFEST_NAME = ".verl_ext_visual_math.json"
"""Written last into the output directory; lists the config the parquet files were generated with."""
TASKS: tuple[str, ...] = ("count", "sum", "compare")
SPLITS: tuple[str, ...] = ("train", "test")
LAYOUTS: tuple[str, ...] = ("verl", "hub")

SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle")
# Saturated, mutually distant colours; shapes are drawn without anti-aliasing so pixels carry these exact values.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "blue": (30, 70, 220),
    "green": (20, 150, 50),
    "yellow": (235, 200, 0),
    "purple": (140, 50, 180),
    "orange": (245, 130, 0),
}
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)

_COUNT_QUESTIONS = (
    "How many {color} {kind}s are in the image?",
    "Count the {color} {kind}s in the picture. How many are there?",
)
_SUM_QUESTIONS = (
    "What is the sum of the numbers shown in the image?",
    "Add up all the numbers in the picture. What is the total?",
)
_COMPARE_QUESTIONS = (
    "Which bar is longer, A or B? Answer with the letter.",
    "Two bars are labeled A and B. Which one is longer? Answer with the letter.",
)


@dataclass(frozen=True)
class VisualMathConfig:
    """Size, difficulty and seed of the generated dataset."""

    n_train: int = 256
    """Number of training examples."""
    n_test: int = 64
    """Number of test examples."""
    tasks: tuple[str, ...] = TASKS
    """Tasks to generate, assigned round-robin over the example index."""
    image_size: int = 112
    """Side of the square image in pixels; keep it <= 224 so the tiny processor (max 28*28*64 px) does not shrink it."""
    grid: int = 4
    """Shapes are placed in distinct cells of a grid x grid layout, so they never touch."""
    min_count: int = 1
    """Fewest target shapes in a ``count`` example."""
    max_count: int = 6
    """Most target shapes in a ``count`` example."""
    max_distractors: int = 5
    """Most shapes of another colour or kind in a ``count`` example."""
    min_shape_size: int = 12
    """Smallest shape side in pixels."""
    max_shape_size: int = 20
    """Largest shape side in pixels; must leave a margin inside a grid cell."""
    min_terms: int = 2
    """Fewest numbers drawn in a ``sum`` example."""
    max_terms: int = 3
    """Most numbers drawn in a ``sum`` example."""
    min_number: int = 1
    """Smallest number drawn in a ``sum`` example."""
    max_number: int = 20
    """Largest number drawn in a ``sum`` example."""
    font_size: int = 18
    """Pixel size of the font used for numbers and bar labels."""
    min_bar_gap: int = 10
    """Smallest length difference in pixels between the two bars of a ``compare`` example."""
    seed: int = 0
    """Base seed; example ``i`` of split ``s`` is generated from ``(seed, s, i)``."""
    data_source: str = DATA_SOURCE
    """Value of the ``data_source`` column (verl routes reward functions on it)."""

    def __post_init__(self) -> None:
        for ok, message in (
            (self.tasks and set(self.tasks) <= set(TASKS),
             f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}"),
            (self.n_train >= 0 and self.n_test >= 0, "split sizes must be >= 0"),
            (1 <= self.min_count <= self.max_count, "need 1 <= min_count <= max_count"),
            (self.max_count + self.max_distractors <= self.grid**2,
             "max_count + max_distractors must fit in the grid cells"),
            (4 <= self.min_shape_size <= self.max_shape_size <= self.cell_size - 4,
             "need 4 <= min_shape_size <= max_shape_size <= cell size - 4"),
            (1 <= self.min_terms <= self.max_terms, "need 1 <= min_terms <= max_terms"),
            (0 <= self.min_number <= self.max_number, "need 0 <= min_number <= max_number"),
            (16 <= self.image_size <= 1024, "image_size must be in [16, 1024]"),
        ):
            if not ok:
                raise ValueError(message)

    @property
    def cell_size(self) -> int:
        """Side of one grid cell in pixels."""
        return self.image_size // self.grid


@dataclass(frozen=True)
class Shape:
    """A filled shape inside the box ``(x0, y0, x1, y1)`` (inclusive pixel coordinates)."""

    kind: str
    color: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Label:
    """Text drawn with its top-left anchor at ``xy``; ``box`` is the inked bounding box."""

    text: str
    xy: tuple[int, int]
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Bar:
    """A horizontal filled bar named ``name`` covering ``box`` (inclusive pixel coordinates)."""

    name: str
    color: str
    box: tuple[int, int, int, int]

    @property
    def length(self) -> int:
        """Horizontal extent in pixels."""
        return self.box[2] - self.box[0] + 1


@dataclass(frozen=True)
class Scene:
    """Everything drawn in one image plus the question about it; the image is a pure function of this."""

    task: str
    question: str
    answer: str
    image_size: int
    font_size: int
    shapes: tuple[Shape, ...] = ()
    labels: tuple[Label, ...] = ()
    bars: tuple[Bar, ...] = ()
    target: dict[str, str] = field(default_factory=dict)
    """For ``count``: the asked ``kind`` and ``color``."""


@dataclass(frozen=True)
class VisualMathExample:
    """One generated example: the scene, its rendered PNG and where it came from."""

    split: str
    index: int
    scene: Scene
    png: bytes


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow bundles a scalable default font (no system fonts needed), so rendering is the same on any machine.
    return ImageFont.load_default(size=size)


def _count_scene(rng: random.Random, config: VisualMathConfig) -> Scene:
    kind = rng.choice(SHAPE_KINDS)
    color = rng.choice(sorted(COLORS))
    n_target = rng.randint(config.min_count, config.max_count)
    n_distract = rng.randint(0, config.max_distractors)
    others = [(k, c) for k in SHAPE_KINDS for c in sorted(COLORS) if (k, c) != (kind, color)]
    # Bias distractors towards sharing the colour or the kind, so the question needs both attributes.
    near = [(k, c) for k, c in others if k == kind or c == color]
    specs = [(kind, color)] * n_target + [
        rng.choice(near) if rng.random() < 0.6 else rng.choice(others) for _ in range(n_distract)
    ]
    rng.shuffle(specs)
    cells = rng.sample([(r, c) for r in range(config.grid) for c in range(config.grid)], len(specs))
    cs = config.cell_size
    shapes = []
    for (row, col), (k, c) in zip(cells, specs, strict=True):
        size = rng.randint(config.min_shape_size, config.max_shape_size)
        # Keep >= 1 px of background on every side of the cell so neighbouring shapes never touch.
        x0 = col * cs + rng.randint(1, cs - 1 - size)
        y0 = row * cs + rng.randint(1, cs - 1 - size)
        shapes.append(Shape(kind=k, color=c, box=(x0, y0, x0 + size - 1, y0 + size - 1)))
    question = rng.choice(_COUNT_QUESTIONS).format(color=color, kind=kind)
    answer = sum(1 for s in shapes if s.kind == kind and s.color == color)
    return Scene("count", question, str(answer), config.image_size, config.font_size, shapes=tuple(shapes),
                 target={"kind": kind, "color": color})


def _sum_scene(rng: random.Random, config: VisualMathConfig) -> Scene:
    font = _font(config.font_size)
    n_terms = rng.randint(config.min_terms, config.max_terms)
    values = [rng.randint(config.min_number, config.max_number) for _ in range(n_terms)]
    labels: list[Label] = []
    for value in values:
        text = str(value)
        left, top, right, bottom = font.getbbox(text)
        for _ in range(1000):
            x = rng.randint(1 - left, config.image_size - 2 - right)
            y = rng.randint(1 - top, config.image_size - 2 - bottom)
            box = (x + left, y + top, x + right - 1, y + bottom - 1)
            # A wide margin (6 px) keeps numbers visually separate, e.g. "3" next to "7" must not read as "37".
            if all(box[2] + 6 < o[0] or o[2] + 6 < box[0] or box[3] + 6 < o[1] or o[3] + 6 < box[1]
                   for o in (other.box for other in labels)):
                labels.append(Label(text=text, xy=(x, y), box=box))
                break
        else:
            raise RuntimeError("could not place the numbers without overlap; lower font_size or max_terms")
    question = rng.choice(_SUM_QUESTIONS)
    return Scene("sum", question, str(sum(values)), config.image_size, config.font_size, labels=tuple(labels))


def _compare_scene(rng: random.Random, config: VisualMathConfig) -> Scene:
    font = _font(config.font_size)
    size = config.image_size
    label_width = max(font.getbbox(name)[2] for name in "AB")
    x_start = label_width + 6
    max_len = size - 4 - x_start
    min_len = max(4, max_len // 5)
    if max_len - min_len < config.min_bar_gap:
        raise ValueError("image too small for the requested min_bar_gap")
    while True:
        len_a, len_b = rng.randint(min_len, max_len), rng.randint(min_len, max_len)
        if abs(len_a - len_b) >= config.min_bar_gap:
            break
    color_a, color_b = rng.sample(sorted(COLORS), 2)
    thickness = max(6, size // 8)
    rows = (size // 4, (3 * size) // 4)
    bars, labels = [], []
    for name, length, color, center in (("A", len_a, color_a, rows[0]), ("B", len_b, color_b, rows[1])):
        y0 = center - thickness // 2
        bars.append(Bar(name=name, color=color, box=(x_start, y0, x_start + length - 1, y0 + thickness - 1)))
        left, top, right, bottom = font.getbbox(name)
        xy = (2 - left, center - (top + bottom) // 2)
        labels.append(Label(text=name, xy=xy, box=(xy[0] + left, xy[1] + top, xy[0] + right - 1, xy[1] + bottom - 1)))
    question = rng.choice(_COMPARE_QUESTIONS)
    answer = "A" if len_a > len_b else "B"
    return Scene("compare", question, answer, size, config.font_size, labels=tuple(labels), bars=tuple(bars))


_SCENE_BUILDERS = {"count": _count_scene, "sum": _sum_scene, "compare": _compare_scene}


def sample_scene(split: str, index: int, config: VisualMathConfig = VisualMathConfig(), draw: int = 0) -> Scene:
    """Deterministically sample the scene of example ``index`` of ``split``; ``draw`` > 0 samples a replacement
    (see :func:`dataset_scenes`)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    task = config.tasks[index % len(config.tasks)]
    # A string seed is hashed with SHA-512 by `random`, independent of PYTHONHASHSEED: stable across runs.
    seed = f"verl_ext.visual_math:{config.seed}:{split}:{index}" + (f":{draw}" if draw else "")
    return _SCENE_BUILDERS[task](random.Random(seed), config)


MAX_DRAWS = 100
"""Replacement draws tried for one example before the scene space is declared too small for the sizes asked."""


def dataset_scenes(config: VisualMathConfig = VisualMathConfig()) -> dict[str, list[Scene]]:
    """The scenes of every split, ``train`` then ``test``, none repeated in either: an example whose scene was
    drawn before takes its next draw, so the splits keep their sizes and a duplicate is never fatal (a small
    scene space, e.g. ``compare`` alone, repeats scenes by the birthday paradox)."""
    seen: set[str] = set()  # reprs: a Scene holds a dict, so it is not hashable
    scenes: dict[str, list[Scene]] = {}
    for split in SPLITS:
        scenes[split] = []
        for index in range(config.n_train if split == "train" else config.n_test):
            for draw in range(MAX_DRAWS):
                scene = sample_scene(split, index, config, draw)
                if repr(scene) not in seen:
                    break
            else:
                raise ValueError(f"{split} example {index}: {MAX_DRAWS} draws all repeat earlier scenes; the "
                                 f"difficulty settings allow too few distinct scenes for {len(seen)} examples")
            seen.add(repr(scene))
            scenes[split].append(scene)
    return scenes


def render_scene(scene: Scene) -> Image.Image:
    """Draw ``scene`` as an RGB image (shapes and bars without anti-aliasing)."""
    image = Image.new("RGB", (scene.image_size, scene.image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        fill = COLORS[shape.color]
        x0, y0, x1, y1 = shape.box
        if shape.kind == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif shape.kind == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif shape.kind == "triangle":
            draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
        else:
            raise ValueError(f"unknown shape kind {shape.kind!r}")
    for bar in scene.bars:
        draw.rectangle(bar.box, fill=COLORS[bar.color])
    font = _font(scene.font_size)
    for label in scene.labels:
        draw.text(label.xy, label.text, fill=INK, font=font)
    return image


def make_example(
    split: str, index: int, config: VisualMathConfig = VisualMathConfig(), scene: Scene | None = None
) -> VisualMathExample:
    """Example ``index`` of ``split``: its scene (``scene``, else the first draw) and the rendered image's PNG."""
    scene = scene or sample_scene(split, index, config)
    buffer = io.BytesIO()
    render_scene(scene).save(buffer, format="PNG", optimize=False)
    return VisualMathExample(split=split, index=index, scene=scene, png=buffer.getvalue())


def example_to_row(example: VisualMathExample, config: VisualMathConfig = VisualMathConfig()) -> dict[str, Any]:
    """Convert an example to a labelled row of :mod:`verl_ext.data.schema`, with the scene's ``task``."""
    scene = example.scene
    return build_row(data_source=config.data_source, question=scene.question, images=[example.png],
                     split=example.split, index=example.index, answer=scene.answer, keep_label=True,
                     extra_info={"task": scene.task})


def build_rows(split: str, config: VisualMathConfig = VisualMathConfig()) -> list[dict[str, Any]]:
    """All rows of ``split``, scenes from :func:`dataset_scenes`."""
    scenes = dataset_scenes(config)[split]
    return [example_to_row(make_example(split, i, config, scene), config) for i, scene in enumerate(scenes)]


def _count_alternatives(scene: Scene) -> list[tuple[str, str]]:
    kinds = Counter(s.kind for s in scene.shapes)
    colors = Counter(s.color for s in scene.shapes)
    pairs = Counter((s.kind, s.color) for s in scene.shapes)
    asked = (scene.target.get("kind"), scene.target.get("color"))
    # Other drawn kind/colour pairs (sorted: deterministic), all shapes of one colour, all of one kind.
    out = [(f"How many {c} {k}s are in the image?", str(n)) for (k, c), n in sorted(pairs.items()) if (k, c) != asked]
    out += [(f"How many {color} shapes are in the image?", str(n)) for color, n in sorted(colors.items())]
    out += [(f"How many {kind}s of any color are in the image?", str(n)) for kind, n in sorted(kinds.items())]
    out.append(("How many shapes are in the image in total?", str(len(scene.shapes))))
    return out


def _sum_alternatives(scene: Scene) -> list[tuple[str, str]]:
    values = [int(label.text) for label in scene.labels]
    out = [
        ("What is the largest number shown in the image?", str(max(values))),
        ("What is the smallest number shown in the image?", str(min(values))),
        ("How many numbers are written in the image?", str(len(values))),
    ]
    if len(values) >= 2:
        out.append(("What is the difference between the largest and the smallest number in the image?",
                    str(max(values) - min(values))))
    return out


def _compare_alternatives(scene: Scene) -> list[tuple[str, str]]:
    bars = {bar.name: bar for bar in scene.bars}
    longer = scene.answer
    shorter = "B" if longer == "A" else "A"
    return [
        ("Which bar is shorter, A or B? Answer with the letter.", shorter),
        ("What color is bar A?", bars["A"].color),
        ("What color is bar B?", bars["B"].color),
        ("What color is the longer bar?", bars[longer].color),
        ("What color is the shorter bar?", bars[shorter].color),
    ]


_ALTERNATIVES = {"count": _count_alternatives, "sum": _sum_alternatives, "compare": _compare_alternatives}


def alternative_questions(scene: Scene) -> list[tuple[str, str]]:
    """Other ``(question, answer)`` pairs about ``scene``'s image, never empty, in a fixed order, each asking for
    another quantity than ``scene.question``: they teach a model to write questions whose labels are known."""
    if scene.task not in _ALTERNATIVES:
        raise ValueError(f"unknown task {scene.task!r}")
    return [(q, a) for q, a in _ALTERNATIVES[scene.task](scene) if q != scene.question]


def row_schema() -> Any:
    """The Arrow schema of the toy's labelled rows: :func:`verl_ext.data.schema.arrow_schema` plus ``task``."""
    import pyarrow as pa

    return arrow_schema([("task", pa.string())])


def _hub_schema() -> Any:
    # The public sets' hub layout (what verl_ext.data.prepare reads from Geometry3K, GeoQA or MMR1), plus the task.
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.schema([("images", pa.list_(image)), ("problem", pa.string()), ("answer", pa.string()),
                      ("task", pa.string())])


def _paths(out_dir: Path) -> dict[str, Path]:
    return {split: out_dir / f"{split}.parquet" for split in SPLITS}


def write_dataset(
    out_dir: str | os.PathLike[str], config: VisualMathConfig = VisualMathConfig(), *, layout: str = "verl"
) -> dict[str, Path]:
    """Write ``{train,test}.parquet`` into ``out_dir`` (each atomically; no manifest: see :func:`ensure_dataset`)
    as verl's RL rows (``layout=verl``) or the public sets' ``images``, ``problem``, ``answer`` plus ``task``
    (``hub``); returns ``{"train": path, "test": path}``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    paths = _paths(Path(out_dir).absolute())
    for split, path in paths.items():
        rows = build_rows(split, config)
        if layout == "hub":
            rows = [{"images": row["images"], "problem": row["extra_info"]["question"],
                     "answer": row["reward_model"]["ground_truth"], "task": row["extra_info"]["task"]} for row in rows]
        write_parquet(path, rows, _hub_schema() if layout == "hub" else row_schema())
    logger.info("wrote visual-math dataset to %s (%d train, %d test, %s layout)", out_dir, config.n_train,
                config.n_test, layout)
    return paths


def ensure_dataset(
    out_dir: str | os.PathLike[str], config: VisualMathConfig = VisualMathConfig(), *, force: bool = False,
    layout: str = "verl",
) -> dict[str, Path]:
    """The split paths under ``out_dir``, written first unless complete for ``config`` (or ``force``); a cached
    build (:func:`verl_ext.files.build_once`)."""
    out_dir = Path(out_dir).absolute()
    paths = _paths(out_dir)
    manifest = {"build_version": BUILD_VERSION, "config": dataclasses.asdict(config)}
    if layout != "verl":  # no layout key for verl's, so data sets built before the hub layout stay valid
        manifest["layout"] = layout
    build_once(
        out_dir, manifest, lambda: write_dataset(out_dir, config, layout=layout),
        expect=paths.values(), force=force, manifest_name=MANIFEST_NAME,
    )
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m verl_ext.toy.visual_math out=DIR [layout=hub] [force=true] [n_train=256 ...]``: write
    (or reuse) the data set; the keys are :class:`VisualMathConfig`'s fields."""
    from verl_ext.config.compose import builder_command

    return builder_command(
        argv, __doc__, "python -m verl_ext.toy.visual_math", VisualMathConfig,
        lambda out, config, force, layout: ensure_dataset(out, config, force=force, layout=layout),
        extra=[("layout", str, "verl")],
    )


if __name__ == "__main__":
    sys.exit(main())
