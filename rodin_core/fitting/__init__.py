"""Tri-plane fitting (paper §3.1, appendix B.2): phase A fits the shared decoder with the first subjects'
planes, phase B fits every other subject's planes against the frozen decoder.

- :mod:`.loop`: the optimisation of planes (and decoder) on a subject's views;
- :mod:`.preview`: ground truth vs fitted views;
- :mod:`.shard_job`: one fitting shard, renders in, a committed tri-plane shard out.
"""
