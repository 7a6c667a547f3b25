"""Code shared by the API and the worker: settings, database, models, services, notifications."""
