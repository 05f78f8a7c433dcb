# onnxq: build stage compiles with the -dev packages; the runtime stage holds
# only the shared libraries the binary links, and runs as a non-root user.
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
      libprotobuf-c1 libjansson4 libmicrohttpd12 libopenblas0-pthread zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/onnxq --create-home onnxq
COPY --from=build /build/cli/onnxq /usr/local/bin/onnxq
USER onnxq
WORKDIR /var/lib/onnxq
ENTRYPOINT ["/usr/local/bin/onnxq"]
CMD ["--help"]
