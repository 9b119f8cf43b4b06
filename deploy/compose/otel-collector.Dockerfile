# The upstream collector image is built FROM scratch: no shell, no HTTP client for a healthcheck.
# A static busybox supplies `wget` for probing the health_check extension.
FROM otel/opentelemetry-collector-contrib:0.135.0
COPY --from=busybox:1.37-musl /bin/busybox /usr/local/bin/busybox
