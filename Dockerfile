# kdedup, built from this repository.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /kdedup ./cmd/kdedup

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /kdedup /usr/local/bin/kdedup
USER nonroot
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kdedup"]
CMD ["run", "--config", "/etc/kdedup/kdedup.yaml"]
