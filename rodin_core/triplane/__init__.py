"""Tri-plane representation (paper §3.1): plane conventions, and later fitting and sampling."""
