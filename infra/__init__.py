"""Operations tooling: the pipeline's services started on one machine (docs/local-cluster.md).

``infra`` starts Postgres, Prefect, SeaweedFS and Ray as processes; it imports none of the
pipeline's packages (``rodin_core``, ``render``, ``workflows``).
"""
