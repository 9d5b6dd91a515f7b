# charrnn worker image: also runs Flower and the orchestrator CLI (see docker-compose.yml).
# Build: docker build -t charrnn:latest .
#        (on the podman machines: podman build --format docker --network host -t charrnn:latest .)
FROM python:3.11-slim

# One BLAS thread per process: a worker runs one training process per unit of concurrency, and
# BLAS threads on top of that oversubscribe the cores and make every job slower.
ENV OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Never run training code as root. The UID is fixed so bind mounts can be granted to it.
RUN useradd --no-log-init --create-home --uid 10001 --user-group charrnn

WORKDIR /app

# Dependencies in their own layer, from pyproject.toml alone, so a code change rebuilds in seconds.
# The monitoring extra brings Flower, so one image serves every service of the compose file.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['monitoring']))" > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The code, path by path (with .dockerignore's allow-list: a file put in the checkout, such as
# a TLS key, never reaches the image); its dependencies are already installed above.
COPY README.md ./
COPY charrnn ./charrnn
COPY worker ./worker
COPY orchestrator ./orchestrator
RUN pip install --no-cache-dir --no-deps . \
 && rm -rf build ./*.egg-info

USER 10001:10001

# Alive means: this container's Celery node answers a ping through the broker.
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "celery -A worker inspect ping --destination \"celery@$(hostname)\" --timeout 10"]

# No secret here: CHARRNN_REDIS_URL (with its password) comes from the environment at run time.
CMD ["celery", "-A", "worker", "worker", "--concurrency", "1", "--loglevel", "info"]
