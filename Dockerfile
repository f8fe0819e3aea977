# One image for the engine's three processes (docker-compose.yml picks the command):
#   python worker.py | python -m intake | python -m agency_kit
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# dependencies first, so code edits reuse this layer
COPY pyproject.toml ./
RUN mkdir -p definitions workflows activities intake agency_kit nwd \
    && touch README.md worker.py definitions/__init__.py workflows/__init__.py \
       activities/__init__.py intake/__init__.py agency_kit/__init__.py nwd/__init__.py \
    && pip install . \
    && pip uninstall --yes no-wrong-door \
    && rm -rf definitions workflows activities intake agency_kit nwd README.md worker.py

# .dockerignore keeps .env and agency-keys.json out: no key is ever baked into the image. The
# agencies' keys file is mounted at run time as a secret owned by this uid (docker-compose.yml).
COPY . .
RUN test -f README.md || touch README.md \
    && python -m intake.pages.assets \
    && pip install --no-deps . \
    && useradd --system --create-home --uid 10001 nwd

USER nwd
CMD ["python", "worker.py"]
