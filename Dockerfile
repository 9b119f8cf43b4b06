# One image for every service; the command picks which one runs.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY carbon carbon
COPY contracts contracts
COPY services services
RUN python -m venv /opt/carbon && /opt/carbon/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/carbon --create-home carbon
COPY --from=build /opt/carbon /opt/carbon
ENV PATH=/opt/carbon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CARBON_DATA_DIR=/var/lib/carbon
USER carbon
WORKDIR /var/lib/carbon
EXPOSE 8001 8002 8003 8004
# Override per service, e.g. services.rating.api:create_app on port 8003.
CMD ["uvicorn", "services.account.api:create_app", "--factory", "--host", "0.0.0.0", "--port", "8001"]
