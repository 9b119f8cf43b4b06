# One image for every service; the command picks which one runs, e.g.
#   uvicorn services.rating.api:create_app --factory --host 0.0.0.0 --port 8003
# Bookworm on both stages: the runtime libraries below are named as in Debian 12.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml ./
COPY carbon carbon
COPY contracts contracts
COPY services services
# Every dependency ships wheels, so no compiler is needed; the venv is all the runtime stage copies.
RUN python -m venv /opt/carbon && /opt/carbon/bin/pip install .

FROM python:3.11-slim-bookworm
# Disclosure PDFs: WeasyPrint needs Pango and HarfBuzz subsetting; the CJK font renders Chinese names.
# The font cache is built here because the root filesystem is read-only at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fontconfig fonts-dejavu-core fonts-wqy-microhei \
    && fc-cache -f \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 carbon \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/carbon --create-home carbon
COPY --from=build /opt/carbon /opt/carbon
# XDG_CACHE_HOME: anything a library caches goes to /tmp, the one writable place in Kubernetes.
ENV PATH=/opt/carbon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    CARBON_DATA_DIR=/var/lib/carbon
# Numeric user, so Kubernetes can verify runAsNonRoot.
USER 10001:10001
WORKDIR /var/lib/carbon
EXPOSE 8001 8002 8003 8004
CMD ["uvicorn", "services.account.api:create_app", "--factory", "--host", "0.0.0.0", "--port", "8001"]
