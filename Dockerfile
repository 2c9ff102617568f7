# One image for every Quantum Trader process: the compose file runs it as workers, ingest, api
# and paper exchange by passing the `qt` subcommand (ENTRYPOINT is `qt`), e.g.
#   docker run --rm quantum-trader:0.1.0 worker --queue trade-monitor
# Build: docker build -t quantum-trader:0.1.0 .   (docker-compose.temporal.yml does it for you)
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    QT_DATA_DIR=/var/lib/qt

# libgomp1: LightGBM's wheel links against OpenMP, which the slim image does not carry.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# Non-root user; /var/lib/qt is its data dir (a named volume in compose inherits this owner).
RUN groupadd --system --gid 10001 qt \
    && useradd --system --uid 10001 --gid qt --home-dir /home/qt --create-home \
       --shell /usr/sbin/nologin qt \
    && install -d -o qt -g qt /var/lib/qt

# Project metadata first, then the packages listed in pyproject's [tool.setuptools.packages.find].
WORKDIR /tmp/src
COPY pyproject.toml README.md ./
COPY common ./common
COPY exchange ./exchange
COPY qt ./qt
COPY trading ./trading
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
COPY signals_ingest ./signals_ingest
COPY api ./api
COPY notifications ./notifications
COPY paper_exchange ./paper_exchange
# Exact pins come from pyproject.toml; the source tree is not needed once installed.
RUN pip install --no-cache-dir . \
    && cd / && rm -rf /tmp/src

# The shipped signal model is not Python package data: without this the signal engine of an
# installed image finds no model (its default path is beside the source tree) and trades on the
# fallback rule. A mounted volume or QT_SIGNAL_MODEL_PATH replaces it.
COPY models/signal_lgbm /opt/qt/models/signal_lgbm
ENV QT_SIGNAL_MODEL_PATH=/opt/qt/models/signal_lgbm/model.txt

WORKDIR /var/lib/qt
USER qt

EXPOSE 8000 8100
ENTRYPOINT ["qt"]
CMD ["--help"]
