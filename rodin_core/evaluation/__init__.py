"""Evaluation of trained models against ground truth (paper §4.5, appendix C.5).

- :mod:`.reconstruction`: conditional avatar reconstruction metrics of Table 4 (portrait inversion
  of held-out subjects scored with PSNR / SSIM / LPIPS against their ground-truth views).
"""
