"""Tri-plane representation (paper §3.1): plane conventions, the field and decoder, rescaling, fitting."""
