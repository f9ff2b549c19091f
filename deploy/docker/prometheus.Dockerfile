# The compose deployment's Prometheus, under a local image name so that compose never
# needs to pull it where an image of that name was built (deploy/docker/build-images.sh
# builds it from the local Debian base, which carries Debian's prometheus package). On an
# engine with a registry, compose builds it from the public image.
ARG PROMETHEUS_BASE=prom/prometheus:v2.53.0
FROM ${PROMETHEUS_BASE}
