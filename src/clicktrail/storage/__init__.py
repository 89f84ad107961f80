"""Storage: the schema, migrations, the database handle and the click batch writer."""
