"""The Alembic environment of the node's database: `env.py` and the revisions in `versions/`.

It ships inside the package and is configured in code (`db/migrations.alembic_config`), so no alembic.ini
is needed where the node runs; `db/migrations.py` runs it at start-up and in `dicom-node db upgrade`.
"""
