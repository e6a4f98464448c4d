# AuxPS in a container: a build stage with the -dev packages compiles build/auxps, a slim
# runtime stage holds the binary, its runtime libraries, Fashion-MNIST (Debian's
# dataset-fashion-mnist), dygraphs for the dashboard and configs/. docker-compose.yml runs it as
# a coordinator, parameter-server nodes and workers (docs/DOCKER.md).
#
# The base image is an ARG so that launch/base-image can find it: where no registry answers,
# that script builds it from Debian's archive with debootstrap and `docker import`, and this
# file builds unchanged.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential pkg-config libzmq3-dev libmsgpack-dev libopenblas-dev libuv1-dev \
      zlib1g-dev libinih-dev libjansson-dev libhttp-parser-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY common common
COPY ps ps
COPY worker worker
COPY launch launch
# -mtune=native in the Makefile only tunes; the code needs x86-64-v2 wherever the image runs.
RUN make -j"$(nproc)" build-all BUILD=/out && strip /out/auxps

FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libzmq5 libmsgpackc2 libopenblas0-pthread libuv1 zlib1g libinih1 libjansson4 \
      libhttp-parser2.9 libjs-dygraphs dataset-fashion-mnist curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/auxps /usr/local/bin/auxps
WORKDIR /opt/auxps
COPY configs configs
# Checkpoints and the exported model go to the volume mounted here (docker-compose.yml).
RUN mkdir -p /data
EXPOSE 5555 6000 8080
CMD ["auxps"]
