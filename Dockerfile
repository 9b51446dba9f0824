FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SYNC_MODE=production SYNC_VAR_DIR=/var/lib/moodle-sync
WORKDIR /srv
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/moodle-sync moodle-sync \
    && mkdir -p /var/lib/moodle-sync && chown moodle-sync /var/lib/moodle-sync
USER moodle-sync
EXPOSE 8000
# `api` and `worker` scale out separately; `serve` runs both in one process.
# exec: the server becomes PID 1 and gets docker stop's SIGTERM (sh would ignore it, and the jobs be killed).
CMD ["sh", "-c", "moodle-sync migrate && exec moodle-sync serve --host 0.0.0.0 --port 8000"]
