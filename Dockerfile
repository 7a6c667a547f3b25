# One image for every Threadline process: api, worker, beat, flower and the scripted model.
# CMD is the API of devtools/processes.py's production profile (checked by tests/unit/test_deployment_files.py).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/app
WORKDIR /app
COPY requirements/ requirements/
RUN pip install --no-cache-dir -r requirements/base.txt flower
COPY . .
RUN useradd --create-home threadline && chown -R threadline /app
USER threadline
EXPOSE 8000
CMD ["gunicorn", "-c", "api/gunicorn_conf.py", "-k", "gevent", "-w", "2", "-b", "0.0.0.0:8000", "api.wsgi:app"]
