"""Projection onto the top-k subspace of public per-sample gradients (PDP-SGD).

With G (m x p) the stacked per-sample gradients of m public samples, the
top-k eigenvectors of the public second-moment matrix (1/m) G^T G are
V = G^T U_k diag(lambda_k)^(-1/2), where G G^T = U diag(lambda) U^T. So

    V V^T g = G^T (U_k diag(1/lambda_k) U_k^T) (G g),

and neither V nor any p x p matrix is ever formed: the basis is held as G
(optionally in reduced precision) plus an m x m matrix. The m x m Gram matrix
is accumulated in float32 (float64 for eigh) from column chunks of G, so the
projection is exactly orthogonal for the stored G. The subspace depends only
on public data and the current (already private) weights: projecting the noisy
gradient is post-processing and costs no privacy.
"""
from typing import List, Sequence

import torch

#: Columns of G processed at once when forming products.
CHUNK = 1 << 22


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(flat: torch.Tensor,
              like: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    out, start = [], 0
    for t in like:
        out.append(flat[start:start + t.numel()].view_as(t).to(t.dtype))
        start += t.numel()
    return out


class PublicSubspace:
    """The rank-k subspace spanned by public per-sample gradients.

    Args:
        public_grads: G, shape ``[m, p]`` (any float dtype; kept as given).
        rank: k, at most m. Eigen-directions with eigenvalue below
            ``rtol * largest`` are dropped, so the rank used can be lower
            when the public gradients are linearly dependent.
        rtol: relative eigenvalue cut-off.
    """

    def __init__(self, public_grads: torch.Tensor, rank: int,
                 rtol: float = 1e-6):
        if public_grads.dim() != 2:
            raise ValueError('public_grads must be [m, p]')
        m = public_grads.shape[0]
        if not 1 <= rank <= m:
            raise ValueError(
                f'projection rank must be in [1, m={m}] (the number of '
                f'public samples), got {rank}')
        self.G = public_grads
        gram = self._gram().double()
        eigvals, eigvecs = torch.linalg.eigh(gram)  # ascending
        eigvals, eigvecs = eigvals.flip(0), eigvecs.flip(1)
        keep = int((eigvals[:rank] > rtol * eigvals[0].clamp(min=0)).sum())
        if eigvals[0] <= 0:
            keep = 0
        self.eigenvalues = eigvals.clamp(min=0)
        self.rank = keep
        self.energy = float(self.eigenvalues[:keep].sum() /
                            self.eigenvalues.sum()) if keep else 0.0
        u = eigvecs[:, :keep]
        inv = torch.diag(1.0 / eigvals[:keep]) if keep else u.new_zeros(0, 0)
        # m x m: U_k diag(1/lambda_k) U_k^T
        self.core = (u @ inv @ u.T).float()
        self._u = u
        self._inv_sqrt = eigvals[:keep].rsqrt() if keep else eigvals[:0]

    def _chunks(self):
        p = self.G.shape[1]
        for start in range(0, p, CHUNK):
            yield slice(start, min(start + CHUNK, p))

    def _gram(self) -> torch.Tensor:
        m = self.G.shape[0]
        gram = torch.zeros(m, m, dtype=torch.float32, device=self.G.device)
        for sl in self._chunks():
            block = self.G[:, sl].float()
            gram += block @ block.T
        return gram

    def project_flat(self, g: torch.Tensor) -> torch.Tensor:
        """V V^T g for a flat ``[p]`` vector."""
        coeffs = torch.zeros(self.G.shape[0], dtype=torch.float32,
                             device=g.device)
        for sl in self._chunks():
            coeffs += self.G[:, sl].float() @ g[sl].float()
        coeffs = self.core.to(g.device) @ coeffs
        out = torch.empty_like(g, dtype=torch.float32)
        for sl in self._chunks():
            out[sl] = self.G[:, sl].float().T @ coeffs
        return out.to(g.dtype)

    def project(self, grads: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """V V^T g for per-parameter gradients."""
        return unflatten(self.project_flat(flatten(grads)), grads)

    def basis(self) -> torch.Tensor:
        """V (p x k), materialised: for tests and small models only."""
        v = self.G.float().T @ (self._u.float() * self._inv_sqrt.float())
        return v

