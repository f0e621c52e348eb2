"""Procedural avatar factory (bpy): head, hair, facial hair, clothing and accessories from a recipe."""
