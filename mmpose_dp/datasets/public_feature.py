"""The public feature psi(x) of a crop: a strong Gaussian blur (TRANSFORMS)."""
import cv2
from mmcv.transforms import BaseTransform
from mmpose.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PublicFeatureBlur(BaseTransform):
    """Replace ``results['img']`` by its Gaussian blur.

    Placed right after ``TopdownAffine``, so the blur acts on the crop the
    model sees (the paper: 25x25 kernel, sigma 10 px, after the affine
    crop/augment and before normalisation). Under feature DP the blurred
    crop is treated as public; only the sharp image is protected.

    Args:
        kernel_size: odd kernel side in pixels.
        sigma: standard deviation in pixels.
    """

    def __init__(self, kernel_size: int = 25, sigma: float = 10.0):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        if sigma <= 0:
            raise ValueError(f'sigma must be > 0, got {sigma}')
        self.kernel_size = kernel_size
        self.sigma = sigma

    def transform(self, results: dict) -> dict:
        results['img'] = cv2.GaussianBlur(
            results['img'], (self.kernel_size, self.kernel_size), self.sigma)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(kernel_size={self.kernel_size}, '
                f'sigma={self.sigma})')
