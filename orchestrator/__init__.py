"""The orchestrator: submit charrnn training jobs to Celery workers and fetch what they produce
from the Redis job store (`orchestrator --help`)."""
