"""The data layer: what every stage writes to the store and reads from it.

- :mod:`.triplanes`: the fitted tri-planes (and frontal views) as a training dataset.
"""
