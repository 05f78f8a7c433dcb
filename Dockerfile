# onnxq: the build stage compiles with the -dev packages; the runtime stage
# holds only the shared libraries the binary links (plus curl for the health
# check) and runs the daemon as a non-root user on a data volume.
FROM debian:bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config protobuf-c-compiler libprotobuf-c-dev libjansson-dev \
      libmicrohttpd-dev libopenblas-dev zlib1g-dev check libsubunit-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    && cmake --build /build -j"$(nproc)" --target onnxq

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libprotobuf-c1 libjansson4 libmicrohttpd12 libopenblas0-pthread zlib1g curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/onnxq --create-home onnxq
COPY --from=build /build/cli/onnxq /usr/local/bin/onnxq
USER onnxq
WORKDIR /var/lib/onnxq
VOLUME ["/var/lib/onnxq"]
# Inside the container the daemon listens on all interfaces; publish the
# port on the host's loopback (docker run -p 127.0.0.1:8080:8080).
ENV ONNXQ_LISTEN=0.0.0.0:8080 ONNXQ_DATA_DIR=/var/lib/onnxq
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/onnxq"]
CMD ["serve"]
