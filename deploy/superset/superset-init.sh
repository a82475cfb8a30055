#!/bin/sh
# Superset start-up in the cluster setting: metadata DB, admin user, the tripflow bundle
# (built by the tripflow-dashboards service) imported with the reader's password, then serve.
set -eu
superset db upgrade
superset fab create-admin --username admin --firstname tripflow --lastname admin \
    --email admin@localhost --password "$SUPERSET_ADMIN_PASSWORD" || true
superset init
# The bundle in the volume was built with the reader's password filled in from the
# environment (the repository never holds it).
superset import-dashboards -p /bundle/tripflow_dashboards.zip -u admin
exec gunicorn --bind 0.0.0.0:8088 --workers 2 --timeout 120 "superset.app:create_app()"
