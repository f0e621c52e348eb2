"""The data layer: what every stage writes to the store and reads from it (docs/data-contracts.md).

- :mod:`.layout`: every stage, shard, file and key-prefix name, defined once;
- :mod:`.errors`: a missing or unusable input, with the command that makes it;
- :mod:`.renders`: the renders stage (views and subjects tables) and where each subject's views are;
- :mod:`.decoder`: the one loader of the decoder fitted in phase A;
- :mod:`.triplane_records`: the tri-plane shard's files (float16 planes, per-subject metrics);
- :mod:`.triplanes`: the fitted tri-planes as a training dataset, and which of them training reads;
- :mod:`.frontals`, :mod:`.plane_stats`, :mod:`.checkpoints`: the frontal views, the plane
  statistics and the trained stages' checkpoints.
"""
