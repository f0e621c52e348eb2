"""Rodin core: the maths, models and storage of the Rodin pipeline; never imports prefect, ray or bpy."""
