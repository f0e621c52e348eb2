"""Blender side of the corpus stage: procedural avatars, camera rig and shard rendering (paper §4.1).

Only modules under ``render.avatar`` and ``render.blender_*`` import ``bpy``; they run inside an
isolated Blender process started by :mod:`render.launcher`.
"""
