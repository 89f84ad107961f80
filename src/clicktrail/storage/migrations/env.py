"""Alembic environment: run with the connection `clicktrail.storage.migrate` hands over."""

from alembic import context

from clicktrail.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `clicktrail migrate`, which supplies the connection")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
