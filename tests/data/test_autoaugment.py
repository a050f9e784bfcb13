"""AutoAugment: every op and both policies keep shape, dtype and range; ops match PIL where PIL defines them."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from finegrain.data.autoaugment import GOOD_POLICY, IDENTITY, IMAGENET_POLICY, OPS, autoaugment, draw_policy

SIZES = [(17, 23), (31, 9), (64, 48)]
SEED = tf.constant([3, 4], tf.int64)


def photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), np.full((h, w), 90.0)], -1)
    return np.clip(base * 0.6 + rng.normal(40, 30, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_keeps_shape_dtype_and_range(name):
    for h, w in SIZES:
        image = photo(h, w)
        for level in (0.0, 5.0, 10.0):
            for sign in (-1.0, 1.0):
                out = OPS[name](tf.constant(image), tf.constant(level), tf.constant(sign), SEED)
                assert out.dtype == tf.uint8 and out.shape == (h, w, 3), (name, level)
                assert 0 <= int(tf.reduce_min(out)) and int(tf.reduce_max(out)) <= 255


def test_policies_have_the_original_sizes():
    assert len(GOOD_POLICY) == 95 and len(IMAGENET_POLICY) == 25
    assert all(len(sub) == 2 and all(0 <= p <= 1 and 0 <= lv <= 10 for _, p, lv in sub) for sub in GOOD_POLICY + IMAGENET_POLICY)


@pytest.mark.parametrize("policy", ["good", "imagenet"])
def test_policies_on_odd_sizes_are_deterministic(policy):
    spec = (tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int64))
    fn = tf.function(lambda im, s: autoaugment(im, policy, s), input_signature=spec)  # one trace for all sizes
    changed = 0
    for h, w in SIZES:
        image = tf.constant(photo(h, w))
        for k in range(8):
            seed = tf.constant([k, h], tf.int64)
            out = fn(image, seed)
            assert out.dtype == tf.uint8 and out.shape == (h, w, 3)
            assert np.array_equal(out, fn(image, seed))
            changed += int(not np.array_equal(out, image))
    assert changed > 0


def test_drawn_choices_follow_the_policy_table():
    op, level, sign = (t.numpy() for t in draw_policy("imagenet", tf.constant([5, 6], tf.int64), 40_000))
    names = list(OPS)
    for stage in range(2):
        applied = op[:, stage] != IDENTITY
        expected = np.mean([sub[stage][1] for sub in IMAGENET_POLICY])  # sub-policies are equally likely
        assert abs(applied.mean() - expected) < 0.01, stage
        pairs = {(names[o], lv) for o, lv in zip(op[applied, stage], level[applied, stage])}
        assert pairs == {(name, lv) for sub in IMAGENET_POLICY for name, p, lv in [sub[stage]] if p > 0}
    assert set(np.unique(sign)) == {-1.0, 1.0} and abs((sign > 0).mean() - 0.5) < 0.01


def run(name, image, level=5.0, sign=1.0):
    return OPS[name](tf.constant(image), tf.constant(level), tf.constant(sign), SEED).numpy()


def test_ops_match_pil():
    image = photo(31, 23)
    pil = Image.fromarray(image)
    assert np.array_equal(run("Equalize", image), np.asarray(ImageOps.equalize(pil)))
    assert np.abs(run("AutoContrast", image).astype(int) - np.asarray(ImageOps.autocontrast(pil))).max() <= 1
    assert np.array_equal(run("Invert", image), np.asarray(ImageOps.invert(pil)))
    assert np.array_equal(run("Posterize", image, 10.0), np.asarray(ImageOps.posterize(pil, 4)))
    assert np.array_equal(run("Solarize", image, 5.0), np.asarray(ImageOps.solarize(pil, 128)))
    factor = 5.0 / 10 * 1.8 + 0.1  # level 5
    for name, enhancer in (("Color", ImageEnhance.Color), ("Brightness", ImageEnhance.Brightness),
                           ("Contrast", ImageEnhance.Contrast), ("Sharpness", ImageEnhance.Sharpness)):
        ours = run(name, image).astype(int)
        theirs = np.asarray(enhancer(pil).enhance(factor)).astype(int)
        assert np.abs(ours - theirs).max() <= 2, name


@pytest.mark.parametrize("h, w", [(17, 23), (16, 3), (1, 5), (224, 224)])
def test_auto_contrast_sees_every_pixel(h, w):
    # Each channel's extremes sit in one pixel only, first or last (the last pixels of an image whose
    # pixel count is not a multiple of 16 are reduced apart): the stretch must use them.
    image = np.full((h, w, 3), 100, np.uint8)
    image.reshape(-1, 3)[-1] = (250, 101, 99)
    image.reshape(-1, 3)[0, 1] = 30
    lo, hi = image.reshape(-1, 3).min(0).astype(np.float32), image.reshape(-1, 3).max(0).astype(np.float32)
    expected = np.clip((image - lo) * (np.float32(255) / (hi - lo)), 0, 255).astype(np.uint8)
    assert np.array_equal(run("AutoContrast", image), expected)


def test_geometry_ops():
    image = photo(20, 30)
    for name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"):
        assert np.array_equal(run(name, image, 0.0), image), name  # level 0 = identity
    moved = run("TranslateX", image, 10.0)  # 250 px at 224 = 22.3 px at this 20 px short side
    assert (moved[:, 8:] == 128).all() and np.array_equal(moved[:, :7], image[:, 22:29])
    big = photo(224, 224) // 2  # no pixel is 128 before the cutout
    for level, side in ((10.0, 200), (2.0, 40)):
        cut = run("Cutout", big, level)
        rows, cols = np.nonzero((cut == 128).all(-1))
        span_r, span_c = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert span_r <= side and span_c <= side and len(rows) == span_r * span_c  # a 2*pad square, clipped
        assert np.array_equal(cut[cut != 128], big[cut != 128])
    assert np.array_equal(run("Cutout", big, 0.0), big)


def test_translate_matches_the_projective_transform():
    from finegrain.data.autoaugment import _size_scale, _transform

    image = tf.constant(photo(37, 29))
    for level in (3.0, 7.0, 10.0):
        for sign in (-1.0, 1.0):
            pixels = sign * level / 10 * 250 * _size_scale(image)
            want_x = _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])
            want_y = _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])
            assert np.array_equal(run("TranslateX", image.numpy(), level, sign), want_x)
            assert np.array_equal(run("TranslateY", image.numpy(), level, sign), want_y)


def test_policy_branches_stay_functional_ops_that_run_only_the_branch_taken():
    # Lowered to Switch/Merge, every op of all 15 branches would cost executor work per image (2x slower).
    spec = (tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int64))
    graph = tf.function(lambda im, s: autoaugment(im, "good", s)).get_concrete_function(*spec).graph

    def lowered(op):
        try:
            return op.get_attr("_lower_using_switch_merge")
        except ValueError:
            return False

    branching = [op for op in graph.get_operations() if op.type in ("If", "StatelessIf", "Case", "StatelessCase")]
    assert len(branching) == 2 and not any(lowered(op) for op in branching)
    plain = tf.function(lambda x: tf.cond(x > 0, lambda: x, lambda: -x)).get_concrete_function(tf.TensorSpec([], tf.float32))
    assert any(lowered(op) for op in plain.graph.get_operations())  # elsewhere TensorFlow's default is untouched
