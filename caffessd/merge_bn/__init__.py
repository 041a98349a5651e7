"""merge-bn: folding BatchNorm and Scale into the layers before them (fold),
and proving the folded net computes what the original did (verify).

May import: util, the core, image/, onnxconv/ and inference/ (verify runs
both nets through onnxruntime, or OpenCV when asked). Nothing above.
"""
from caffessd.merge_bn.fold import (FoldResult, SkippedFold, batchnorm_affine, fold_batchnorm, merge_bn,
                                    output_paths, write_merged)

__all__ = ["FoldResult", "SkippedFold", "batchnorm_affine", "fold_batchnorm", "merge_bn", "output_paths",
           "write_merged"]
