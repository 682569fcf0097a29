# Image for the rendezvous server and the peers: the toolkit plus iproute2
# (peers must point their default route at their NAT router).
FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . /src
RUN pip install --no-cache-dir /src
