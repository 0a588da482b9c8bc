"""Training colour jitter: its probability, the draws over variants, seeded variants, and caching them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ditr.cache import FeatureCache, image_digest
from ditr.configs import RunConfig
from ditr.errors import ConfigError
from ditr.scene import View
from ditr.vfm import VFMBackend, load_vfm
from ditr.vfm.color_jitter import FRESH_VARIANTS, ColorJitter, JitterVariant, color_jitter
from ditr.vfm.extract import FeatureSource, fill_cache, image_jobs

STRENGTH = (0.4, 0.4, 0.2, 0.1)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def test_draws_follow_the_probability_and_spread_over_the_variants():
    rng = np.random.default_rng(0)
    draws = np.array([ColorJitter(STRENGTH, p=0.5, variants=4).draw(rng) for _ in range(20000)])
    share = np.bincount(draws, minlength=5) / len(draws)
    # binomial standard errors are 0.0035 (p = 0.5) and 0.0023 (0.125): 5 sigma bounds
    assert abs(share[0] - 0.5) < 0.018 and np.all(np.abs(share[1:] - 0.125) < 0.012)
    assert not any(ColorJitter(STRENGTH, p=0.0, variants=4).draw(rng) for _ in range(200))
    assert all(ColorJitter(STRENGTH, p=1.0, variants=4).draw(rng) for _ in range(200))
    fresh = [ColorJitter(STRENGTH, p=1.0).draw(rng) for _ in range(1000)]  # variants 0: a new one every draw
    assert len(set(fresh)) == 1000 and 1 <= min(fresh) and max(fresh) <= FRESH_VARIANTS


def test_a_variant_is_a_pure_function_of_the_image_and_its_index():
    image, other = _image(0), _image(1)
    one, two = JitterVariant(STRENGTH, 1), JitterVariant(STRENGTH, 2)
    ident = "f" * 64
    assert np.array_equal(one.apply(image, ident), one.apply(image.copy(), ident))
    seeded = color_jitter(image, STRENGTH, np.random.default_rng(one.seed(ident)))
    assert np.array_equal(one.apply(image, ident), seeded)
    assert not np.array_equal(one.apply(image, ident), two.apply(image, ident))
    assert one.seed(ident) != one.seed("e" * 64) != two.seed(ident)  # each image its own draws
    assert not np.array_equal(one.apply(image, ident), image) and not np.array_equal(one.apply(other, ident), other)
    with pytest.raises(ValueError, match="numbered from 1"):
        JitterVariant(STRENGTH, 0)


def test_jitter_commutes_with_the_flip():
    """A flipped variant is cached as the mirror of the jittered image: the order must not matter."""
    image, variant = _image(2), JitterVariant(STRENGTH, 3)
    rng_seed = variant.seed("a" * 64)
    flipped_after = color_jitter(image, STRENGTH, np.random.default_rng(rng_seed))[:, ::-1]
    flipped_before = color_jitter(np.ascontiguousarray(image[:, ::-1]), STRENGTH, np.random.default_rng(rng_seed))
    assert np.abs(flipped_after.astype(int) - flipped_before.astype(int)).max() <= 1  # float rounding


def test_config_fields_and_their_checks():
    images = RunConfig.from_dict({"images": {"color_jitter": list(STRENGTH)}}).images
    assert (images.color_jitter_p, images.jitter_variants) == (0.5, 0)  # the reference's probability
    assert images.jitter() == ColorJitter(STRENGTH, 0.5, 0)
    assert RunConfig.from_dict({}).images.jitter() is None
    with pytest.raises(ConfigError, match="jitter_variants.*color_jitter is null"):
        RunConfig.from_dict({"images": {"jitter_variants": 4}})
    with pytest.raises(ConfigError, match="color_jitter_p"):
        RunConfig.from_dict({"images": {"color_jitter": list(STRENGTH), "color_jitter_p": 1.5}})
    with pytest.raises(ConfigError, match="jitter_variants"):
        RunConfig.from_dict({"images": {"color_jitter": list(STRENGTH), "jitter_variants": -1}})


def test_filling_variants_caches_the_features_of_the_jittered_images(tmp_path):
    k = np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]])
    views = [View(name=f"v{i}", width=32, height=24, intrinsics=k, cam_to_world=np.eye(4), image=_image(i))
             for i in range(2)]
    jitter = ColorJitter(STRENGTH, variants=2)
    jobs = image_jobs("s", views, (False, True), jitter)
    assert len(jobs) == 2 * 2 * 3  # views x flips x (the image as it is + 2 variants)
    source = FeatureSource(VFMBackend(load_vfm("dinov2-tiny-random-reg")), FeatureCache(tmp_path))
    assert (fill_cache(jobs, source).misses, fill_cache(jobs, source).hits) == (12, 12)
    assert len(source.cache.entries()) == 12
    variant = jitter.variant(2)
    cached = source.cache.get(source.key(views[1], True, variant))
    pixels = source.backend.preprocess([variant.apply(views[1].read_image(), image_digest(views[1]))],
                                       source.key(views[1]).size, True)
    torch.testing.assert_close(cached, source.backend.forward(pixels)[0].half())
    assert not torch.equal(cached, source.cache.get(source.key(views[1], True)))
