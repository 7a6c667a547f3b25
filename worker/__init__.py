"""The Celery worker: claims runs, drives the tool-using agent, stores answers."""
