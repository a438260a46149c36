import numpy as np
import pytest

from mmpose_dp.datasets import PublicFeatureBlur


def _detail(img):
    return np.abs(np.diff(img.astype(float), axis=1)).mean()


def test_blur_removes_detail_and_keeps_shape():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(64, 48, 3), dtype=np.uint8)
    out = PublicFeatureBlur(kernel_size=25, sigma=10)(dict(img=img.copy()))
    blurred = out['img']
    assert blurred.shape == img.shape and blurred.dtype == img.dtype
    # High-frequency energy (pixel differences) mostly gone.
    assert _detail(blurred) < 0.1 * _detail(img)


@pytest.mark.parametrize('bad', [dict(kernel_size=4), dict(sigma=0)])
def test_bad_blur_settings_are_refused(bad):
    with pytest.raises(ValueError):
        PublicFeatureBlur(**bad)
